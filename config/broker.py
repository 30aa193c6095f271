"""The Redis broker transport: kombu's, with two fixes for a connection lost mid-task.

Selected by `CELERY_BROKER_TRANSPORT` (config/settings.py). Found on celery 5.7.0 /
kombu 5.7.0, the newest on PyPI: no released version has the fixes, so they live here.

1. The worker died ("Unrecoverable error: AttributeError: 'NoneType' object has no
   attribute 'hostname'") whenever its Redis connection dropped while a task ran. On a
   connection loss Celery first `collect()`s the connection, which detaches the transport
   from its `Connection` (`transport.client = None`), then closes it; closing the channel
   restores its unacknowledged messages, which needs a new Redis client, whose parameters
   kombu reads from `transport.client`, by then None. The AttributeError is not a
   connection error, so nothing catches it. A channel here keeps the connection
   parameters it was made with, so that closing (and acking, below) still works.

2. Restoring on a connection loss requeued the message of a task still running in a pool
   process: once Redis was back, a second worker ran the same job while the first was
   still at it. The running task's message is left unacknowledged in Redis instead, and
   the task acks it on its old channel when it ends (through the kept parameters), so the
   task runs once. Messages that no pool process has started are restored as before.
   Should Redis itself be gone, restoring fails with a connection error, which kombu
   ignores, and the messages wait in Redis for the visibility timeout, as any unacked
   message does.
"""

import logging

from kombu.transport import redis

logger = logging.getLogger(__name__)


def _running_delivery_tags() -> set[str]:
    """Delivery tags of the tasks a pool process of this worker has started."""
    from celery.worker.state import active_requests

    return {request.message.delivery_tag for request in tuple(active_requests)}


class QoS(redis.QoS):
    def restore_unacked(self, client=None):
        running = _running_delivery_tags() & set(self._delivered)
        if running:
            logger.warning(
                "broker.restore_skipped_running",
                extra={"delivery_tags": sorted(running), "reason": "still running here"},
            )
            kept = {tag: self._delivered.pop(tag) for tag in running}
        try:
            return super().restore_unacked(client)
        finally:
            if running:
                # Still delivered on this channel, so that their ack removes them from Redis.
                self._delivered.update(kept)


class Channel(redis.Channel):
    QoS = QoS

    def __init__(self, connection, *args, **kwargs):
        self._client_params = connection.client
        super().__init__(connection, *args, **kwargs)

    def _connparams(self, asynchronous=False):
        if self.connection.client is None:
            # Detached by Connection.collect() after a connection loss: a new client is
            # made from the parameters this channel was opened with.
            self.connection.client = self._client_params
            try:
                return super()._connparams(asynchronous=asynchronous)
            finally:
                self.connection.client = None
        return super()._connparams(asynchronous=asynchronous)


class Transport(redis.Transport):
    Channel = Channel
