from django.apps import AppConfig


class SandboxConfig(AppConfig):
    name = "domains.sandbox"
    label = "sandbox"
