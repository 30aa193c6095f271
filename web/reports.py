from django.core.files.storage import default_storage
from django.http import FileResponse, Http404, HttpRequest

from domains.reports.selectors import report_list


def report_download(request: HttpRequest, report_id: int) -> FileResponse:
    """A report's CSV, for its owner or staff (by session or bearer token); 404 otherwise."""
    report = report_list(viewer=request.user).filter(pk=report_id).exclude(file="").first()
    if report is None:
        raise Http404("No such report file.")
    return FileResponse(
        default_storage.open(report.file.name, "rb"),
        as_attachment=True,
        filename=report.file.name.rsplit("/", 1)[-1],
        content_type="text/csv",
    )
