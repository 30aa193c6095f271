from django.apps import AppConfig


class MediaConfig(AppConfig):
    name = "domains.media"
    label = "media"
    job_retry_handlers = {"IMAGE_PROCESSING": "domains.media.services.image_job_retry"}
    job_purge_handlers = ("domains.media.services.image_derivatives_purge",)

    def ready(self) -> None:
        from django.conf import settings
        from PIL import Image

        # Pillow's decompression-bomb guard, at our cap, in the server and every worker;
        # domains.media.processing turns its warning into a refusal.
        Image.MAX_IMAGE_PIXELS = settings.IMAGE_MAX_PIXELS
