from django.apps import AppConfig


class NotificationsConfig(AppConfig):
    name = "domains.notifications"
    label = "notifications"
    job_end_handlers = {
        "NOTIFICATION": "domains.notifications.services.notification_job_ended",
    }

    def ready(self) -> None:
        from domains.accounts.services import REGISTRATION_HOOKS
        from domains.notifications.emails import welcome_email_queue

        if welcome_email_queue not in REGISTRATION_HOOKS:
            REGISTRATION_HOOKS.append(welcome_email_queue)
