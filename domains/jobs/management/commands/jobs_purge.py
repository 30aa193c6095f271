"""`manage.py jobs_purge --older-than-days N [--dry-run]`: the retention purge by hand."""

from datetime import timedelta

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from domains.jobs.retention import jobs_purge


class Command(BaseCommand):
    help = (
        "Purge finished jobs older than N days with their event logs, report files, image "
        "derivatives and webhook deliveries (orders, payments and other records the user "
        "owns stay, unlinked from the job); prints what it removed."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--older-than-days",
            type=int,
            default=settings.JOB_RETENTION_DAYS,
            help="Jobs that finished more than this many days ago (default JOB_RETENTION_DAYS).",
        )
        parser.add_argument(
            "--dry-run", action="store_true", help="Count what would go; change nothing."
        )

    def handle(self, *args, older_than_days: int, dry_run: bool, **options):
        if older_than_days < 0:
            raise CommandError("--older-than-days must be 0 or more.")
        counts = jobs_purge(older_than=timedelta(days=older_than_days), dry_run=dry_run)
        verb = "Would remove" if dry_run else "Removed"
        if not counts.removed:
            self.stdout.write(f"Nothing finished more than {older_than_days} days ago.")
            return
        self.stdout.write(f"{verb} (jobs finished more than {older_than_days} days ago):")
        for kind, count in sorted(counts.removed.items()):
            self.stdout.write(f"  {kind}: {count}")
        if counts.unlinked:
            kept = "Would keep" if dry_run else "Kept"
            self.stdout.write(f"{kept}, without their job link:")
            for kind, count in sorted(counts.unlinked.items()):
                self.stdout.write(f"  {kind}: {count}")
