import logging

from billiard.exceptions import SoftTimeLimitExceeded
from celery import shared_task
from django.conf import settings

from domains.jobs.progress import JobAlreadyFinished, JobCancelled
from domains.reports.models import Report, ReportStatus
from domains.reports.services import report_end, sales_report_export
from workers.base import JobTask

logger = logging.getLogger(__name__)


@shared_task(
    bind=True,
    base=JobTask,
    name="reports.generate_sales",
    soft_time_limit=settings.REPORT_SOFT_TIME_LIMIT,
    time_limit=settings.REPORT_SOFT_TIME_LIMIT + 60,
)
def generate_sales_report(self: JobTask, *, job_id: int, report_id: int) -> dict | None:
    report = Report.objects.filter(pk=report_id).first()
    if report is None:
        logger.warning("report.vanished", extra={"report_id": report_id, "job_id": job_id})
        return None
    try:
        report = sales_report_export(report=report, reporter=self.reporter)
    except (JobCancelled, JobAlreadyFinished):
        report_end(report=report, status=ReportStatus.CANCELLED)
        raise
    except SoftTimeLimitExceeded:
        report_end(
            report=report, status=ReportStatus.FAILED, error="The report ran past its time limit."
        )
        raise
    except Exception:
        report_end(
            report=report, status=ReportStatus.FAILED, error="The report could not be generated."
        )
        raise
    return {"reportId": report.pk, "rowCount": report.row_count}
