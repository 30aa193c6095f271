"""Settings, read from the environment and grouped by concern.

With nothing set the service runs on SQLite under var/ and an embedded Redis server
(started by `manage.py runstack`); DATABASE_URL and REDIS_URL switch to real servers.
"""

import hashlib
import hmac
import os
import secrets
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

import dj_database_url

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("VAR_DIR", BASE_DIR / "var"))
VAR_DIR.mkdir(parents=True, exist_ok=True)


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    return default if value is None else value.strip().lower() in {"1", "true", "yes", "on"}


def env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def env_list(name: str, default: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


# --- Metrics (domains/infra/metrics.py, served at /metrics by config/metrics.py) ---------------
# prometheus-client's multiprocess mode: every process (server, workers, beat) writes its
# figures under METRICS_DIR (default var/prometheus), which prometheus_client reads from
# PROMETHEUS_MULTIPROC_DIR when first imported (hence here, first). Set from this
# process's own VAR_DIR, never inherited: a stack on another VAR_DIR keeps its own figures.
# runstack empties it at start.
# METRICS_ENABLED=0 (for measuring what they cost, bench/payments.py) leaves the figures in
# each process's memory, where nobody reads them, and /metrics answers 404.
METRICS_ENABLED = env_bool("METRICS_ENABLED", True)
PROMETHEUS_MULTIPROC_DIR = Path(os.environ.get("METRICS_DIR", VAR_DIR / "prometheus"))
if METRICS_ENABLED:
    PROMETHEUS_MULTIPROC_DIR.mkdir(parents=True, exist_ok=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(PROMETHEUS_MULTIPROC_DIR)
else:
    os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
# A scraper's bearer token (Authorization: Bearer ...); staff sessions may read it too.
METRICS_TOKEN = os.environ.get("METRICS_TOKEN", "")


def installation_secret(path: Path) -> str:
    """A random secret made once for this installation (its var/), then read by every
    process that shares var/, so the server and its workers agree on it."""
    if not path.exists():
        candidate = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        candidate.write_text(secrets.token_urlsafe(48))
        candidate.chmod(0o600)
        try:
            os.link(candidate, path)  # atomic: the first process to get here wins
        except FileExistsError:
            pass
        finally:
            candidate.unlink()
    return path.read_text().strip()


# --- Core -------------------------------------------------------------------------------
DEBUG = env_bool("DEBUG", True)
# Development gets a key of its own per installation, never one from the repository.
SECRET_KEY = os.environ.get(
    "SECRET_KEY", installation_secret(VAR_DIR / "secret-key") if DEBUG else ""
)
if not SECRET_KEY:
    raise RuntimeError("SECRET_KEY must be set when DEBUG is off")
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "127.0.0.1,localhost,[::1]" if DEBUG else "")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", "")
PUBLIC_BASE_URL = os.environ.get("PUBLIC_BASE_URL", "")  # absolute file URLs behind a proxy

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "config",  # the runstack command
    "strawberry_django",
    "domains.accounts",
    "domains.jobs",
    "domains.catalog",
    "domains.orders",
    "domains.payments",
    "domains.reports",
    "domains.media",
    "domains.notifications",
    "domains.crm",
    "domains.analytics",
    "domains.sandbox",
    "domains.webhooks",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Static files (the admin's, GraphiQL's) answered before any session or database work.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "web.middleware.RequestIdMiddleware",
    # Before anything that reads the database: no connection in time is a 503, not a 500.
    "config.capacity.DatabaseConnectionFirst",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # After sessions and auth: a bearer token replaces the session user and lifts CSRF.
    "web.middleware.BearerTokenMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "config.urls"
ASGI_APPLICATION = "config.asgi.application"
AUTH_USER_MODEL = "accounts.User"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]

# Static files are served by the app itself (WhiteNoise), under `make run` and in
# production alike. In development they are found where they live (no collectstatic);
# with DEBUG off `collectstatic` (runstack runs it) writes compressed, content-hashed
# copies to STATIC_ROOT, served with far-future cache headers.
STATIC_URL = "static/"
STATIC_ROOT = Path(os.environ.get("STATIC_ROOT", VAR_DIR / "static"))
WHITENOISE_USE_FINDERS = DEBUG
MEDIA_ROOT = Path(os.environ.get("MEDIA_ROOT", VAR_DIR / "media"))
MEDIA_URL = "media/"  # never served directly: files go through views that check ownership
STORAGES = {
    "default": {
        "BACKEND": os.environ.get("STORAGE_BACKEND", "django.core.files.storage.FileSystemStorage")
    },
    "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
        if DEBUG
        else "config.static_storage.StaticFilesStorage"
    },
}

# --- Database ---------------------------------------------------------------------------
# SQLite in WAL mode with IMMEDIATE transactions, so that the server and worker processes
# writing at once wait for the lock instead of failing with "database is locked".
_SQLITE_PATH = VAR_DIR / "db.sqlite3"
DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL", f"sqlite:///{_SQLITE_PATH}"), conn_max_age=60
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"]["OPTIONS"] = {
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 30,
    }
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "test-db.sqlite3")}
else:
    # A bounded pool per process (psycopg_pool), CONN_MAX_AGE 0 as the pool requires. A
    # worker process runs one task at a time and holds one connection; a server process
    # at most SERVER_MAX_CONCURRENT_REQUESTS + ASGI_THREADS (below), which the default
    # pool size covers. Across every process that uses the database:
    #   server processes x DB_POOL_MAX_SIZE + worker processes x 1 < max_connections
    # A request that cannot get a connection within DB_POOL_TIMEOUT seconds answers
    # SERVICE_UNAVAILABLE (HTTP 503) before it has read or written anything.
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True  # the pool checks one before lending it
    # DB_POOL_DISABLED: only for the test runner's own process, whose short-lived threads
    # end without giving their connection back (the servers and workers it starts pool).
    if not env_bool("DB_POOL_DISABLED", False):
        DATABASES["default"]["OPTIONS"] = {
            "pool": {
                "min_size": env_int("DB_POOL_MIN_SIZE", 1),
                "max_size": env_int("DB_POOL_MAX_SIZE", 12),
                "timeout": float(os.environ.get("DB_POOL_TIMEOUT", "5")),
            }
        }

# --- Server capacity (config/capacity.py) -----------------------------------------------
# Django runs each request's sync code on a thread of its own: a server process lets at
# most this many HTTP requests in at once, and the rest wait in the event loop (no thread)
# for up to SERVER_QUEUE_TIMEOUT seconds, then answer 503 SERVICE_UNAVAILABLE.
SERVER_MAX_CONCURRENT_REQUESTS = env_int("SERVER_MAX_CONCURRENT_REQUESTS", 8)
# Server processes `manage.py runstack` starts on its port (each its own event loop and
# pub/sub connection): one per core unless told.
WEB_CONCURRENCY = env_int("WEB_CONCURRENCY", os.cpu_count() or 1)
SERVER_QUEUE_TIMEOUT = float(os.environ.get("SERVER_QUEUE_TIMEOUT", "5"))
# Threads for sync code that async views run off the request's thread (sync_to_async with
# thread_sensitive=False, e.g. the sandbox's ledger): the event loop's default executor.
ASGI_THREADS = env_int("ASGI_THREADS", 4)

# --- Redis ------------------------------------------------------------------------------
# Unset: the embedded server that `manage.py runstack` starts on this port.
EMBEDDED_REDIS = "REDIS_URL" not in os.environ
EMBEDDED_REDIS_PORT = env_int("EMBEDDED_REDIS_PORT", 6380)
REDIS_URL = os.environ.get("REDIS_URL", f"redis://127.0.0.1:{EMBEDDED_REDIS_PORT}/0")
# Pub/sub channels are one namespace for the whole server, whatever the database: their names
# carry REDIS_URL's database number, so that deployments (or test processes) sharing a Redis
# on different databases hear only their own jobs' events.
REDIS_CHANNEL_PREFIX = os.environ.get(
    "REDIS_CHANNEL_PREFIX", f"db{urlsplit(REDIS_URL).path.strip('/') or '0'}:"
)
# Seconds. Redis answers in well under a millisecond: one that does not connect or answer
# within these is taken as down, so that a request fails fast instead of hanging.
# The progress path (each job's snapshot, log and channels; the access signals) on a Redis
# Cluster: any node's URL, or several comma-separated (seeds). Sharded pub/sub (Redis 7).
# Unset: on REDIS_URL with everything else.
REDIS_CLUSTER_URL = os.environ.get("REDIS_CLUSTER_URL", "")
REDIS_CONNECT_TIMEOUT = float(os.environ.get("REDIS_CONNECT_TIMEOUT", "1"))
REDIS_SOCKET_TIMEOUT = float(os.environ.get("REDIS_SOCKET_TIMEOUT", "2"))

# --- Celery: at-least-once delivery, exactly-once effects --------------------------------
# The broker: Redis (REDIS_URL) unless CELERY_BROKER_URL names another, e.g. RabbitMQ
# (amqp://user:password@host:5672/vhost). Results stay on Redis either way.
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", REDIS_URL)
BROKER_IS_AMQP = urlsplit(CELERY_BROKER_URL).scheme in ("amqp", "amqps", "pyamqp")
# kombu's Redis transport with the fixes for a connection lost mid-task (config/broker.py);
# on RabbitMQ, kombu's own (py-amqp).
CELERY_BROKER_TRANSPORT = None if BROKER_IS_AMQP else "config.broker:Transport"
if BROKER_IS_AMQP:
    # Quorum queues: replicated, and they count deliveries (x-delivery-count). They have
    # no priorities and no global QoS: Celery detects them and sets prefetch per consumer,
    # and sends countdowns (retries) through RabbitMQ's native delayed delivery, which
    # needs topic exchanges and counts whole seconds (config.celery rounds delays up).
    CELERY_TASK_DEFAULT_QUEUE_TYPE = "quorum"
    CELERY_TASK_DEFAULT_EXCHANGE_TYPE = "topic"
    CELERY_WORKER_DETECT_QUORUM_QUEUES = True
    # Queues named by a route (webhooks) are made the same way.
    CELERY_TASK_CREATE_MISSING_QUEUE_TYPE = "quorum"
    CELERY_TASK_CREATE_MISSING_QUEUE_EXCHANGE_TYPE = "topic"
# Celery's Redis backend, subscribed to a result only when someone waits for it (config/celery.py).
CELERY_RESULT_BACKEND = f"config.celery:ResultBackend+{REDIS_URL}"
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_ACKS_LATE = True  # a task killed mid-run is redelivered, not lost
CELERY_TASK_REJECT_ON_WORKER_LOST = True
# Processes of each worker (Celery's worker_concurrency; WORKER_CONCURRENCY is the old name).
CELERY_WORKER_CONCURRENCY = env_int("CELERY_WORKER_CONCURRENCY", env_int("WORKER_CONCURRENCY", 2))
CELERY_WORKER_PREFETCH_MULTIPLIER = 1  # a long task never holds others hostage
CELERY_TASK_TRACK_STARTED = True
CELERY_RESULT_EXPIRES = timedelta(days=1)
CELERY_TASK_SOFT_TIME_LIMIT = env_int("CELERY_TASK_SOFT_TIME_LIMIT", 15 * 60)
CELERY_TASK_TIME_LIMIT = env_int("CELERY_TASK_TIME_LIMIT", 16 * 60)
# Redelivery of an unacknowledged task waits this long: above the longest hard limit,
# or a task still running would be handed to a second worker. Derived from every task
# limit at the end of this module; config.celery refuses to start a worker below it.
CELERY_BROKER_TRANSPORT_OPTIONS: dict = {
    # A Redis that does not answer is down: publishing fails at once (the caller answers
    # "try again") instead of hanging; the worker's consumer reconnects on its own.
    "socket_connect_timeout": REDIS_CONNECT_TIMEOUT,
    "socket_timeout": REDIS_SOCKET_TIMEOUT,
}
CELERY_REDIS_SOCKET_CONNECT_TIMEOUT = REDIS_CONNECT_TIMEOUT
CELERY_REDIS_SOCKET_TIMEOUT = REDIS_SOCKET_TIMEOUT
CELERY_BROKER_CONNECTION_TIMEOUT = REDIS_CONNECT_TIMEOUT
# Workers and beat outlive a Redis outage of any length: they reconnect, never give up.
CELERY_BROKER_CONNECTION_RETRY = True
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BROKER_CONNECTION_MAX_RETRIES = None
# On Redis a running task is not cancelled when the connection drops: its message stays
# unacked in Redis and it acks on its own channel when it ends (config/broker.py), so it
# runs once. RabbitMQ requeues a lost channel's unacked messages at once and a new channel
# cannot ack them: the running task is cancelled, and its redelivery carries the job on.
CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS = BROKER_IS_AMQP
# Sending a task tries once more after a dropped connection, then fails (no 19 s hang).
CELERY_TASK_PUBLISH_RETRY_POLICY = {
    "max_retries": 1,
    "interval_start": 0,
    "interval_step": 0.2,
    "interval_max": 0.2,
}
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_WORKER_SEND_TASK_EVENTS = False
CELERY_IMPORTS = [
    "workers.reports",
    "workers.catalog",
    "workers.orders",
    "workers.payments",
    "workers.media",
    "workers.notifications",
    "workers.crm",
    "workers.analytics",
    "workers.chords",
    "workers.jobs",
    "workers.webhooks",
]
CELERY_BEAT_SCHEDULE: dict[str, dict] = {}

# --- Jobs and progress ------------------------------------------------------------------
JOB_SNAPSHOT_TTL = timedelta(days=env_int("JOB_SNAPSHOT_TTL_DAYS", 7))
JOB_EVENT_LOG_MAXLEN = env_int("JOB_EVENT_LOG_MAXLEN", 10_000)
JOB_DB_WRITE_INTERVAL = float(os.environ.get("JOB_DB_WRITE_INTERVAL", "2.0"))  # seconds
# Deliveries of a job's task (or of one part of it), the first included: a lost worker's
# redeliveries and the watchdog's revivals count; Celery retries have their own budget.
JOB_MAX_ATTEMPTS = env_int("JOB_MAX_ATTEMPTS", 5)
# A running job's lease: renewed while its worker runs it (every third of it); one that
# lapsed means the worker stopped, and the watchdog sends the job again.
JOB_LEASE_SECONDS = env_int("JOB_LEASE_SECONDS", 60)
# The watchdog: how often it runs, how long a sent job may wait in the queue before it is
# sent again (its message may be lost), and how many times it revives a job.
JOB_WATCHDOG_INTERVAL = float(os.environ.get("JOB_WATCHDOG_INTERVAL", "30"))
JOB_PENDING_GRACE_SECONDS = env_int("JOB_PENDING_GRACE_SECONDS", 300)
JOB_MAX_REVIVALS = env_int("JOB_MAX_REVIVALS", 3)
# Retention (domains/jobs/retention.py): finished jobs older than this go, with their event
# logs, report files, image derivatives and webhook deliveries; beat purges every
# JOB_PURGE_INTERVAL seconds, at most JOB_PURGE_MAX_BATCHES batches of JOB_PURGE_BATCH_SIZE
# jobs a run (each batch one short transaction), so a backlog drains over a few runs.
JOB_RETENTION_DAYS = env_int("JOB_RETENTION_DAYS", 30)
JOB_PURGE_BATCH_SIZE = env_int("JOB_PURGE_BATCH_SIZE", 500)
JOB_PURGE_MAX_BATCHES = env_int("JOB_PURGE_MAX_BATCHES", 100)
JOB_PURGE_INTERVAL = float(os.environ.get("JOB_PURGE_INTERVAL", "3600"))
# Fair starts (domains/jobs/dispatcher.py): a job waits in the database until the
# dispatcher admits it: at most JOB_MAX_RUNNING_PER_USER of one user's jobs run at once
# (and per kind, e.g. "SALES_REPORT:2,IMAGE_PROCESSING:1"), chosen round robin across
# users, each sent to its lane's queue. A lane has its own worker slots (runstack starts a
# worker per lane); JOB_LANE_SLOTS is how many slots consume each lane across every
# machine, and the dispatcher keeps no more of the lane's jobs on the broker than that.
JOB_MAX_RUNNING_PER_USER = env_int("JOB_MAX_RUNNING_PER_USER", 4)
JOB_MAX_RUNNING_PER_USER_BY_KIND = {
    kind.strip(): int(limit)
    for kind, _, limit in (
        item.partition(":") for item in env_list("JOB_MAX_RUNNING_PER_USER_BY_KIND", "")
    )
}
# lane -> its Celery queue; the interactive lane is Celery's default queue, which also
# carries the follow-ups and the service's own periodic tasks.
JOB_LANE_QUEUES = {"interactive": "celery", "bulk": "bulk", "staff": "staff"}
# Task names (Celery's glob routes) of the bulk and staff lanes; every other task is
# interactive (payments, checkouts, emails, notifications).
JOB_LANE_TASKS = {
    "bulk": ["reports.*", "media.*"],
    "staff": ["crm.*", "catalog.*", "analytics.*"],
}
JOB_LANE_SLOTS = {
    "interactive": CELERY_WORKER_CONCURRENCY,
    "bulk": 2,
    "staff": 1,
    **{
        lane.strip(): int(slots)
        for lane, _, slots in (item.partition(":") for item in env_list("JOB_LANE_SLOTS", ""))
    },
}
# Every waiting job moves at each admission: their places are written and published at
# most this often (seconds; a new job's at once, and the watchdog's sweep refreshes them).
JOB_QUEUE_PLACES_INTERVAL = float(os.environ.get("JOB_QUEUE_PLACES_INTERVAL", "1.0"))
SUBSCRIPTION_BUFFER_JOBS = env_int("SUBSCRIPTION_BUFFER_JOBS", 1_000)
# An idle jobProgress re-reads its job's row this often (seconds), so that it ends with its
# job even when the terminal event never reached Redis.
JOB_STREAM_IDLE_RECHECK = float(os.environ.get("JOB_STREAM_IDLE_RECHECK", "5.0"))

# --- GraphQL ----------------------------------------------------------------------------
GRAPHQL_MAX_DEPTH = env_int("GRAPHQL_MAX_DEPTH", 10)
GRAPHQL_MAX_ALIASES = env_int("GRAPHQL_MAX_ALIASES", 15)
GRAPHQL_MAX_TOKENS = env_int("GRAPHQL_MAX_TOKENS", 2_000)
# One per field, times the page size of each list, every fragment spread counted.
GRAPHQL_MAX_COST = env_int("GRAPHQL_MAX_COST", 10_000)
GRAPHQL_MAX_PAGE_SIZE = env_int("GRAPHQL_MAX_PAGE_SIZE", 100)  # `first`/`last` of any list
GRAPHQL_INTROSPECTION = env_bool("GRAPHQL_INTROSPECTION", DEBUG)
GRAPHQL_GRAPHIQL = env_bool("GRAPHQL_GRAPHIQL", DEBUG)
GRAPHQL_WS_INIT_TIMEOUT = timedelta(seconds=env_int("GRAPHQL_WS_INIT_TIMEOUT", 10))
GRAPHQL_WS_KEEPALIVE = float(os.environ.get("GRAPHQL_WS_KEEPALIVE", "15"))
# Per server process: sockets a viewer (a user, or an anonymous address) may hold open,
# operations one socket may run at once, and subscriptions a viewer may run in all.
GRAPHQL_WS_MAX_PER_USER = env_int("GRAPHQL_WS_MAX_PER_USER", 20)
GRAPHQL_WS_MAX_SUBSCRIPTIONS = env_int("GRAPHQL_WS_MAX_SUBSCRIPTIONS", 50)
GRAPHQL_WS_MAX_SUBSCRIPTIONS_PER_USER = env_int("GRAPHQL_WS_MAX_SUBSCRIPTIONS_PER_USER", 200)
# Comment lines (SSE) or empty parts (multipart) sent this often on an idle HTTP stream, so
# that proxies that close quiet connections keep it open.
GRAPHQL_STREAM_HEARTBEAT = float(os.environ.get("GRAPHQL_STREAM_HEARTBEAT", "15"))
# Automatic persisted queries (Apollo's APQ): a registered document is kept this long in
# Redis after its last use. With GRAPHQL_TRUSTED_DOCUMENTS set (the path of a manifest,
# Apollo's persisted-query manifest or GraphQL Codegen's {hash: document} JSON), only its
# documents run: anything else is refused, and APQ no longer registers new ones.
GRAPHQL_APQ_TTL = env_int("GRAPHQL_APQ_TTL", 7 * 24 * 3600)
# Anyone may register a document: the largest one stored (an application's operations are
# a few KB; 2,000 tokens of GRAPHQL_MAX_TOKENS fit), and THROTTLES["apq_register"].
GRAPHQL_APQ_MAX_BYTES = env_int("GRAPHQL_APQ_MAX_BYTES", 32 * 1024)
GRAPHQL_TRUSTED_DOCUMENTS = os.environ.get("GRAPHQL_TRUSTED_DOCUMENTS", "")
# An open websocket checks its token at once when it is revoked, and also this often
# (seconds), which ends sockets whose token expired.
GRAPHQL_WS_ACCESS_RECHECK = float(os.environ.get("GRAPHQL_WS_ACCESS_RECHECK", "60"))
# A websocket whose write buffer stays above its high-water mark this long (seconds: its
# client reads nothing) is closed; until then the hub skips it and it gets the latest state.
GRAPHQL_WS_STUCK_CLOSE = float(os.environ.get("GRAPHQL_WS_STUCK_CLOSE", "30"))
STRAWBERRY_DJANGO = {"MUTATIONS_DEFAULT_HANDLE_ERRORS": False}

# --- Accounts ---------------------------------------------------------------------------
API_TOKEN_TTL = timedelta(days=env_int("API_TOKEN_TTL_DAYS", 30))
API_TOKEN_LAST_USED_RESOLUTION = timedelta(minutes=1)  # last use written at most this often
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
# Attempts a minute and the burst allowed at once, per account and per client address,
# across every process (Redis). Logins are tokenCreate and the admin's login form; a
# per-minute of 0 turns that throttle off.
THROTTLES = {
    "login": {
        "account": (
            env_int("THROTTLE_LOGIN_ACCOUNT_PER_MINUTE", 5),
            env_int("THROTTLE_LOGIN_ACCOUNT_BURST", 10),
        ),
        "address": (
            env_int("THROTTLE_LOGIN_ADDRESS_PER_MINUTE", 30),
            env_int("THROTTLE_LOGIN_ADDRESS_BURST", 30),
        ),
    },
    "register": {
        "account": (
            env_int("THROTTLE_REGISTER_ACCOUNT_PER_MINUTE", 2),
            env_int("THROTTLE_REGISTER_ACCOUNT_BURST", 5),
        ),
        "address": (
            env_int("THROTTLE_REGISTER_ADDRESS_PER_MINUTE", 5),
            env_int("THROTTLE_REGISTER_ADDRESS_BURST", 20),
        ),
    },
    # Persisted-query documents stored per client (a viewer, else an address): an
    # application registers its few dozen operations once.
    "apq_register": {
        "address": (
            env_int("THROTTLE_APQ_REGISTER_PER_MINUTE", 10),
            env_int("THROTTLE_APQ_REGISTER_BURST", 100),
        ),
    },
}
SESSION_COOKIE_HTTPONLY = True
# A refused CSRF check on /graphql/ answers a GraphQL error (code CSRF_FAILED), not HTML.
CSRF_FAILURE_VIEW = "schema.views.csrf_failure"
SESSION_COOKIE_SECURE = not DEBUG
CSRF_COOKIE_SECURE = not DEBUG

# --- Reports ----------------------------------------------------------------------------
REPORT_SOFT_TIME_LIMIT = env_int("REPORT_SOFT_TIME_LIMIT", 10 * 60)
# Caps how fast an export reads, to keep a busy database responsive (0: no cap).
REPORT_MAX_ROWS_PER_SECOND = env_int("REPORT_MAX_ROWS_PER_SECOND", 0)
REPORT_TMP_DIR = Path(os.environ.get("REPORT_TMP_DIR", VAR_DIR / "tmp" / "reports"))

# --- Sandbox: stand-ins for the outside services, served under /sandbox/ ----------------
# Mounted in development only, unless asked for: its controls switch the gateway down and
# its reads show what was "sent" to users.
SANDBOX_ENABLED = env_bool("SANDBOX_ENABLED", DEBUG)
# Workers reach it over real HTTP; `runstack` and the test stack point this at the server.
SANDBOX_BASE_URL = os.environ.get(
    "SANDBOX_BASE_URL", f"http://127.0.0.1:{env_int('PORT', 8000)}/sandbox"
)


def sandbox_key(variable: str, service: str) -> str:
    """The key a stand-in accepts: from `variable`, else derived from SECRET_KEY, so each
    installation has its own and every process derives the same."""
    derived = hmac.new(SECRET_KEY.encode(), f"sandbox:{service}".encode(), hashlib.sha256)
    return os.environ.get(variable, f"sk_test_{derived.hexdigest()[:32]}")


# The keys the stand-ins accept; the clients' keys below default to them.
SANDBOX_GATEWAY_API_KEY = sandbox_key("SANDBOX_GATEWAY_API_KEY", "gateway")
SANDBOX_CATALOG_API_KEY = sandbox_key("SANDBOX_CATALOG_API_KEY", "catalog")
SANDBOX_CRM_API_KEY = sandbox_key("SANDBOX_CRM_API_KEY", "crm")
SANDBOX_MESSAGING_API_KEY = sandbox_key("SANDBOX_MESSAGING_API_KEY", "messaging")

# --- Commerce: catalog, orders, payments ------------------------------------------------
# Production points these at the real gateway and supplier catalog by URL and key.
PAYMENT_GATEWAY_URL = os.environ.get("PAYMENT_GATEWAY_URL", SANDBOX_BASE_URL + "/gateway")
PAYMENT_GATEWAY_API_KEY = os.environ.get("PAYMENT_GATEWAY_API_KEY", SANDBOX_GATEWAY_API_KEY)
PAYMENT_GATEWAY_READ_TIMEOUT = float(os.environ.get("PAYMENT_GATEWAY_READ_TIMEOUT", "10"))
PAYMENT_GATEWAY_ATTEMPTS = env_int("PAYMENT_GATEWAY_ATTEMPTS", 3)  # within one task run
PAYMENT_GATEWAY_RATE_PER_MINUTE = env_int("PAYMENT_GATEWAY_RATE_PER_MINUTE", 600)
PAYMENT_GATEWAY_BURST = env_int("PAYMENT_GATEWAY_BURST", 20)
PAYMENT_BREAKER_THRESHOLD = env_int("PAYMENT_BREAKER_THRESHOLD", 5)
PAYMENT_BREAKER_RESET_SECONDS = float(os.environ.get("PAYMENT_BREAKER_RESET_SECONDS", "30"))
# Task reschedules (429, breaker open, transient errors) before a payment is given up.
PAYMENT_MAX_RETRIES = env_int("PAYMENT_MAX_RETRIES", 8)
CATALOG_API_URL = os.environ.get("CATALOG_API_URL", SANDBOX_BASE_URL + "/catalog")
CATALOG_API_KEY = os.environ.get("CATALOG_API_KEY", SANDBOX_CATALOG_API_KEY)
# The supplier's quota is global, so the limit binds every worker process together.
CATALOG_RATE_PER_MINUTE = env_int("CATALOG_RATE_PER_MINUTE", 30)
CATALOG_RATE_BURST = env_int("CATALOG_RATE_BURST", 5)
CATALOG_SYNC_MAX_RETRIES = env_int("CATALOG_SYNC_MAX_RETRIES", 50)
ORDER_EMAIL_FROM = os.environ.get("ORDER_EMAIL_FROM", "orders@example.com")
ORDER_EMAIL_MAX_RETRIES = env_int("ORDER_EMAIL_MAX_RETRIES", 8)
# The sandbox's behaviour: how long "tok_timeout" hangs, how long "tok_slow" takes to
# answer after charging, and the catalog's own quota (0: none).
SANDBOX_GATEWAY_HANG_SECONDS = float(os.environ.get("SANDBOX_GATEWAY_HANG_SECONDS", "30"))
SANDBOX_GATEWAY_SLOW_SECONDS = float(os.environ.get("SANDBOX_GATEWAY_SLOW_SECONDS", "3"))
SANDBOX_CATALOG_PER_MINUTE = env_int("SANDBOX_CATALOG_PER_MINUTE", 0)
SANDBOX_CATALOG_SIZE = env_int("SANDBOX_CATALOG_SIZE", 40)


# --- Images -----------------------------------------------------------------------------
IMAGE_UPLOAD_MAX_BYTES = env_int("IMAGE_UPLOAD_MAX_BYTES", 20 * 1024 * 1024)
# A GraphQL POST body larger than this is refused (413) before it is read: the largest
# upload plus room for the multipart framing and the operations document.
GRAPHQL_MAX_BODY_BYTES = env_int("GRAPHQL_MAX_BODY_BYTES", IMAGE_UPLOAD_MAX_BYTES + 1024 * 1024)
# Pixels, not bytes, bound decoding memory: a small file can declare a huge canvas.
# Pillow's decompression-bomb guard is set to this and made fatal (domains.media.apps).
IMAGE_MAX_PIXELS = env_int("IMAGE_MAX_PIXELS", 50_000_000)
IMAGE_OUTPUT_FORMAT = os.environ.get("IMAGE_OUTPUT_FORMAT", "JPEG").upper()
if IMAGE_OUTPUT_FORMAT not in {"JPEG", "WEBP"}:
    raise RuntimeError("IMAGE_OUTPUT_FORMAT must be JPEG or WEBP")
IMAGE_QUALITY = env_int("IMAGE_QUALITY", 82)
# The optimized original is scaled to fit this box (0: keep the full size); Full HD lets a
# 12 MP JPEG decode at half size through Pillow's draft mode.
IMAGE_OPTIMIZED_MAX_SIDE = env_int("IMAGE_OPTIMIZED_MAX_SIDE", 1920)
IMAGE_THUMBNAIL_BOXES = {"small": 150, "medium": 400, "large": 800}
IMAGE_SOFT_TIME_LIMIT = env_int("IMAGE_SOFT_TIME_LIMIT", 120)


# --- Email, notifications, CRM, analytics -----------------------------------------------
from celery.schedules import crontab  # noqa: E402

# SMTP by settings; with none set, development prints emails to the console.
EMAIL_BACKEND = os.environ.get(
    "EMAIL_BACKEND",
    "django.core.mail.backends.console.EmailBackend"
    if DEBUG and "EMAIL_HOST" not in os.environ
    else "django.core.mail.backends.smtp.EmailBackend",
)
EMAIL_HOST = os.environ.get("EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("EMAIL_PORT", 25)
EMAIL_HOST_USER = os.environ.get("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = os.environ.get("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
EMAIL_TIMEOUT = env_int("EMAIL_TIMEOUT", 10)  # seconds; a hung SMTP server is a retry
EMAIL_FILE_PATH = VAR_DIR / "emails"  # for the file backend
DEFAULT_FROM_EMAIL = os.environ.get("DEFAULT_FROM_EMAIL", "Jobstream <no-reply@example.com>")
# Every retry budget is one setting, `<X>_MAX_RETRIES`: the task's reschedules after its
# first run (workers.base, the kit's one retry policy).
# Retries on SMTP errors: exponential backoff from this many seconds, with full jitter.
EMAIL_MAX_RETRIES = env_int("EMAIL_MAX_RETRIES", 4)
EMAIL_RETRY_BACKOFF = env_int("EMAIL_RETRY_BACKOFF", 30)
EMAIL_RETRY_BACKOFF_MAX = env_int("EMAIL_RETRY_BACKOFF_MAX", 15 * 60)
EMAIL_SOFT_TIME_LIMIT = env_int("EMAIL_SOFT_TIME_LIMIT", 60)
EMAIL_TIME_LIMIT = EMAIL_SOFT_TIME_LIMIT + 30
# A claim older than this belongs to a run that died; another run may take the email over.
EMAIL_CLAIM_TIMEOUT = timedelta(seconds=EMAIL_TIME_LIMIT + 60)

# Notification channels: pluggable providers, by dotted path.
NOTIFICATION_PROVIDERS = {
    "EMAIL": "domains.notifications.providers.EmailProvider",
    "SMS": "domains.notifications.providers.HttpSmsProvider",
    "PUSH": "domains.notifications.providers.HttpPushProvider",
}
SMS_BASE_URL = os.environ.get("SMS_BASE_URL", SANDBOX_BASE_URL + "/messaging")
SMS_API_KEY = os.environ.get("SMS_API_KEY", SANDBOX_MESSAGING_API_KEY)
PUSH_BASE_URL = os.environ.get("PUSH_BASE_URL", SANDBOX_BASE_URL + "/messaging")
PUSH_API_KEY = os.environ.get("PUSH_API_KEY", SANDBOX_MESSAGING_API_KEY)
NOTIFICATION_MAX_RETRIES = env_int("NOTIFICATION_MAX_RETRIES", 4)
NOTIFICATION_RETRY_BACKOFF = env_int("NOTIFICATION_RETRY_BACKOFF", 5)  # seconds, doubled per retry
NOTIFICATION_SOFT_TIME_LIMIT = env_int("NOTIFICATION_SOFT_TIME_LIMIT", 60)
NOTIFICATION_TIME_LIMIT = NOTIFICATION_SOFT_TIME_LIMIT + 30
# A delivery's claim older than this belongs to a run that died (past its hard limit);
# a retry or redelivery of the delivery then takes the send over.
NOTIFICATION_CLAIM_TIMEOUT = timedelta(
    seconds=env_int("NOTIFICATION_CLAIM_SECONDS", NOTIFICATION_TIME_LIMIT + 60)
)

# CRM: the customers API, synced incrementally every hour and in full every night.
CRM_BASE_URL = os.environ.get("CRM_BASE_URL", SANDBOX_BASE_URL + "/crm")
CRM_API_KEY = os.environ.get("CRM_API_KEY", SANDBOX_CRM_API_KEY)
CRM_PAGE_SIZE = env_int("CRM_PAGE_SIZE", 1_000)  # the most the CRM serves per page
CRM_RATE_PER_MINUTE = env_int("CRM_RATE_PER_MINUTE", 600)  # the CRM's published API limit
CRM_SYNC_SOFT_TIME_LIMIT = env_int("CRM_SYNC_SOFT_TIME_LIMIT", 30 * 60)
CRM_SYNC_MAX_RETRIES = env_int("CRM_SYNC_MAX_RETRIES", 4)
CRM_INCREMENTAL_SINCE_HOURS = env_int("CRM_INCREMENTAL_SINCE_HOURS", 2)  # overlaps the hour
# The sandbox CRM's generated customers (tests and demos change them through Redis).
SANDBOX_CRM_CUSTOMERS = env_int("SANDBOX_CRM_CUSTOMERS", 250)

# Analytics: users per chord header task, so 100,000 users are a few dozen tasks.
METRICS_CHUNK_USERS = env_int("METRICS_CHUNK_USERS", 10_000)
METRICS_SOFT_TIME_LIMIT = env_int("METRICS_SOFT_TIME_LIMIT", 10 * 60)
# Caps how fast the chunks read users, to keep a busy database responsive (0: no cap).
METRICS_MAX_USERS_PER_SECOND = env_int("METRICS_MAX_USERS_PER_SECOND", 0)

CELERY_BEAT_SCHEDULE.update(
    {
        "crm-sync-incremental": {
            "task": "crm.sync_scheduled",
            "schedule": crontab(minute=os.environ.get("CRM_SYNC_INCREMENTAL_MINUTE", "0")),
            "kwargs": {"full_sync": False},
        },
        "crm-sync-full": {
            "task": "crm.sync_scheduled",
            "schedule": crontab(
                hour=os.environ.get("CRM_SYNC_FULL_HOUR", "3"),
                minute=os.environ.get("CRM_SYNC_FULL_MINUTE", "0"),
            ),
            "kwargs": {"full_sync": True},
        },
    }
)


# --- Webhooks (domains/webhooks/) ---------------------------------------------------------
# Seconds to wait before each retry of a delivery that failed; past the last, it is FAILED.
WEBHOOK_RETRY_DELAYS = [
    int(s) for s in env_list("WEBHOOK_RETRY_DELAYS", "5,300,1800,7200,18000,36000,36000")
]
# Loopback and private targets (development, tests); link-local and metadata never.
WEBHOOK_ALLOW_PRIVATE = env_bool("WEBHOOK_ALLOW_PRIVATE", DEBUG)
WEBHOOK_TIMEOUT = float(os.environ.get("WEBHOOK_TIMEOUT", "10"))  # connect, and each read
WEBHOOK_RESPONSE_BODY_BYTES = 1024  # what the log keeps of a receiver's answer
WEBHOOK_MAX_ENDPOINTS_PER_USER = env_int("WEBHOOK_MAX_ENDPOINTS_PER_USER", 20)
# An endpoint whose every attempt failed for this long is disabled and its owner emailed.
WEBHOOK_DISABLE_AFTER = timedelta(days=env_int("WEBHOOK_DISABLE_AFTER_DAYS", 5))
WEBHOOK_SOFT_TIME_LIMIT = int(2 * WEBHOOK_TIMEOUT) + 10
WEBHOOK_TIME_LIMIT = WEBHOOK_SOFT_TIME_LIMIT + 10
# An attempt's claim older than this belongs to a run that died: the sweep sends it again.
WEBHOOK_CLAIM_TIMEOUT = timedelta(seconds=env_int("WEBHOOK_CLAIM_SECONDS", WEBHOOK_TIME_LIMIT + 30))
# A retry due within this is handed to the broker at once (with its eta); later ones wait
# in their row for the sweep (the broker holds no message for hours).
WEBHOOK_COUNTDOWN_MAX = timedelta(seconds=env_int("WEBHOOK_COUNTDOWN_MAX_SECONDS", 300))
# The sweep: how often, how long a sent attempt may wait before it is sent again (its
# message may be lost), and how many rows one sweep sends.
WEBHOOK_SWEEP_INTERVAL = float(os.environ.get("WEBHOOK_SWEEP_INTERVAL", "10"))
WEBHOOK_SEND_GRACE_SECONDS = env_int("WEBHOOK_SEND_GRACE_SECONDS", 120)
WEBHOOK_SWEEP_BATCH = env_int("WEBHOOK_SWEEP_BATCH", 1000)
# Deliveries have their own queue and worker (runstack), so a slow receiver holds no job's.
WEBHOOK_QUEUE = "webhooks"
WEBHOOK_WORKER_CONCURRENCY = env_int("WEBHOOK_WORKER_CONCURRENCY", 2)
CELERY_TASK_ROUTES = {
    "webhooks.*": {"queue": WEBHOOK_QUEUE},
    **{
        pattern: {"queue": JOB_LANE_QUEUES[lane]}
        for lane, patterns in JOB_LANE_TASKS.items()
        for pattern in patterns
    },
}
CELERY_BEAT_SCHEDULE["webhooks-sweep"] = {
    "task": "webhooks.sweep",
    "schedule": WEBHOOK_SWEEP_INTERVAL,
}

CELERY_BEAT_SCHEDULE["jobs-watchdog"] = {
    "task": "jobs.watchdog",
    "schedule": JOB_WATCHDOG_INTERVAL,
}
CELERY_BEAT_SCHEDULE["jobs-purge"] = {"task": "jobs.purge", "schedule": JOB_PURGE_INTERVAL}

# The longest hard limit of any task, and the broker's visibility timeout above it.
TASK_TIME_LIMITS = {
    "default": CELERY_TASK_TIME_LIMIT,
    "reports": REPORT_SOFT_TIME_LIMIT + 60,
    "crm": CRM_SYNC_SOFT_TIME_LIMIT + 60,
    "analytics": METRICS_SOFT_TIME_LIMIT + 60,
    "images": IMAGE_SOFT_TIME_LIMIT + 30,
    "email": EMAIL_TIME_LIMIT,
    "notifications": NOTIFICATION_TIME_LIMIT,
    "webhooks": WEBHOOK_TIME_LIMIT,
}
# (RabbitMQ has no visibility timeout: an unacked message waits for its channel to close.
# Its consumer_timeout, 30 minutes by default, must stay above the same limit.)
CELERY_BROKER_TRANSPORT_OPTIONS["visibility_timeout"] = max(TASK_TIME_LIMITS.values()) + 5 * 60
CELERY_RESULT_BACKEND_TRANSPORT_OPTIONS = dict(CELERY_BROKER_TRANSPORT_OPTIONS)
if BROKER_IS_AMQP:
    CELERY_BROKER_TRANSPORT_OPTIONS["confirm_publish"] = True  # a sent task is on the broker


# --- Logging ----------------------------------------------------------------------------
LOG_LEVEL = os.environ.get("LOG_LEVEL", "INFO")
# "json": one JSON object a line (time, level, logger, message, and the request's, job's and
# trace's ids where known), for a log collector; otherwise text with key=value context.
LOG_FORMAT = os.environ.get("LOG_FORMAT", "text").strip().lower()
LOGGING_CONFIG = "config.logging.configure"  # LOGGING, and Python's warnings as records
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "context": {
            "()": "config.logging.ContextFormatter",
            "format": "%(asctime)s %(levelname)s %(name)s %(message)s",
        },
        "json": {"()": "config.logging.JsonFormatter"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "json" if LOG_FORMAT == "json" else "context",
        }
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        # Django's own console handler (DEBUG only) wrote its lines a second time, as text.
        "django": {"level": "INFO"},
        "django.db.backends": {"level": "INFO"},
        # uvicorn's own lines (it set up its handlers before loading the app) in the same
        # format as the rest; at the level uvicorn was started with.
        **{
            name: {"handlers": ["console"], "propagate": False}
            for name in ("uvicorn", "uvicorn.error", "uvicorn.access")
            if LOG_FORMAT == "json"
        },
    },
}

# --- Traces (config/tracing.py) -----------------------------------------------------------
# OpenTelemetry, off unless OTEL_EXPORTER_OTLP_ENDPOINT names a collector (the exporter reads
# the other standard OTEL_EXPORTER_OTLP_* variables; OTEL_EXPORTER_OTLP_PROTOCOL is
# http/protobuf or grpc). OTEL_TRACES_FILE appends every finished span as a JSON line to
# that file instead (or as well): what the tests read, and a look without a collector.
OTEL_EXPORTER_OTLP_ENDPOINT = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "")
OTEL_TRACES_FILE = os.environ.get("OTEL_TRACES_FILE", "")
TRACING_ENABLED = bool(OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_TRACES_FILE)
# The server's service name; its workers add "-worker". OTEL_SERVICE_NAME names both.
OTEL_SERVICE_NAME = os.environ.get("OTEL_SERVICE_NAME", "")
