"""RabbitMQ vhosts of the tests' own: a stack whose workers share a vhost with another's
takes that stack's tasks (with its own settings, database and Redis)."""

import subprocess
from urllib.parse import quote, unquote, urlsplit, urlunsplit

AMQP_SCHEMES = ("amqp", "amqps", "pyamqp")


def is_amqp(broker_url: str) -> bool:
    return urlsplit(broker_url).scheme in AMQP_SCHEMES


def fresh_vhost(broker_url: str, suffix: str) -> str:
    """`broker_url` moved to the vhost "<its vhost>-<suffix>", made afresh (emptied of any
    earlier run's queues) with the URL's user allowed everything in it."""
    broker = urlsplit(broker_url)
    vhost = f"{unquote(broker.path[1:]) or 'jobstream'}-{suffix}"
    user = broker.username or "guest"
    for command in (
        ["delete_vhost", vhost],
        ["add_vhost", vhost],
        ["set_permissions", "-p", vhost, user, ".*", ".*", ".*"],
    ):
        done = subprocess.run(["rabbitmqctl", "-q", *command], capture_output=True, text=True)
        if done.returncode and command[0] != "delete_vhost":
            raise RuntimeError(f"rabbitmqctl {' '.join(command)}: {done.stderr.strip()}")
    return urlunsplit(broker._replace(path="/" + quote(vhost, "")))
