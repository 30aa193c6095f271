import logging

from celery import shared_task
from django.conf import settings

from domains.jobs.tasks import JobTaskName
from domains.reports.models import Report
from domains.reports.services import sales_report_export
from workers.base import JobTask, record_load

logger = logging.getLogger(__name__)


@shared_task(
    bind=True,
    base=JobTask,
    name=JobTaskName.REPORTS_GENERATE_SALES,
    soft_time_limit=settings.REPORT_SOFT_TIME_LIMIT,
    time_limit=settings.TASK_TIME_LIMITS["reports"],
)
def generate_sales_report(self: JobTask, *, job_id: int, report_id: int) -> dict:
    report = record_load(Report, report_id, "report")
    report = sales_report_export(report=report, reporter=self.reporter)
    return {"reportId": report.pk, "rowCount": report.row_count}
