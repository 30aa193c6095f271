"""ASGI entry point: Django for HTTP, Channels for the GraphQL websocket."""

import gc
import os

from django.core.asgi import get_asgi_application

from config import tracing

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
tracing.setup("server")  # before Django loads its middleware: tracing adds its own
django_asgi = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import path  # noqa: E402

from config.capacity import RequestGate  # noqa: E402
from config.websocket import SocketSession, websocket_consumer  # noqa: E402
from web.body_limit import GraphQLBodyLimit  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": RequestGate(GraphQLBodyLimit(django_asgi)),
        # Channels' AuthMiddlewareStack in one layer, its session read only
        "websocket": SocketSession(URLRouter([path("graphql/", websocket_consumer())])),
    }
)

# Everything loaded so far lives as long as the process: keep it out of the collector's
# full passes, which otherwise pause every live subscription for tens of milliseconds.
gc.collect()
gc.freeze()
# Every subscriber holds a few objects from one of its frames to the next (the frame's
# result and its hooks), and by default young collections come often enough to promote
# them all: the full passes that follow walk every open socket's objects, for hundreds of
# milliseconds at 1,000 subscribers, every few seconds (bench/progress.py, gc callbacks).
# A middle generation collected 10 times more rarely lets those objects die young, while
# the youngest stays small, so that each young pass stays short.
gc.set_threshold(2_000, 100, 10)
