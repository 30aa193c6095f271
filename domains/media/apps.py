from django.apps import AppConfig


class MediaConfig(AppConfig):
    name = "domains.media"
    label = "media"
