from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "domains.accounts"
    label = "accounts"

    def ready(self) -> None:
        from domains.accounts.access import connect_access_signals

        connect_access_signals()
