"""The sandbox: working stand-ins for the outside services, over real HTTP.

Each stand-in has its own module and URL prefix, so that they can grow independently.
"""

urlpatterns: list = []
