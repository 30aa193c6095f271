from django.apps import AppConfig


class WebhooksConfig(AppConfig):
    name = "domains.webhooks"
    label = "webhooks"

    def ready(self) -> None:
        from domains.jobs.ending import job_end_hook_register
        from domains.webhooks.services import webhook_deliveries_create

        # Every job's end writes its deliveries in the end's own transaction (the outbox).
        job_end_hook_register(webhook_deliveries_create)
