import warnings

from django.apps import AppConfig


class MediaConfig(AppConfig):
    name = "domains.media"
    label = "media"

    def ready(self) -> None:
        from django.conf import settings
        from PIL import Image

        # Pillow only warns between MAX_IMAGE_PIXELS and twice that; here any image over
        # the cap is refused, in the server and in every worker process alike.
        Image.MAX_IMAGE_PIXELS = settings.IMAGE_MAX_PIXELS
        warnings.simplefilter("error", Image.DecompressionBombWarning)
