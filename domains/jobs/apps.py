from django.apps import AppConfig, apps
from django.utils.module_loading import import_string


class JobsConfig(AppConfig):
    name = "domains.jobs"
    label = "jobs"

    def ready(self) -> None:
        """Register what each domain's record does when its jobs end, and how their work
        starts again: every job-backed model (`JobBacked`) is its `job_kind`'s record; a
        domain's AppConfig names, per JobKind, the handlers in its services
        (`job_end_handlers`, `job_retry_handlers`), what the watchdog checks for work no run
        will finish (`followup_sweepers`), and what it removes when its jobs are purged
        (`job_purge_handlers`, a list)."""
        from domains.jobs.dispatcher import dispatcher_after_end
        from domains.jobs.ending import (
            job_end_handler_register,
            job_end_hook_register,
            job_record_register,
        )
        from domains.jobs.models import JobBacked
        from domains.jobs.outbox import followup_sweeper_register
        from domains.jobs.retention import job_purge_handler_register
        from domains.jobs.retry import job_retry_handler_register

        for model in apps.get_models():
            if issubclass(model, JobBacked):
                job_record_register(model)
        for config in apps.get_app_configs():
            for kind, path in getattr(config, "job_end_handlers", {}).items():
                job_end_handler_register(kind, import_string(path))
            for kind, path in getattr(config, "job_retry_handlers", {}).items():
                job_retry_handler_register(kind, import_string(path))
            for path in getattr(config, "job_purge_handlers", ()):
                job_purge_handler_register(import_string(path))
            for path in getattr(config, "followup_sweepers", ()):
                followup_sweeper_register(import_string(path))
        # A job's end may free a slot: the dispatcher admits the next waiting job.
        job_end_hook_register(dispatcher_after_end)
