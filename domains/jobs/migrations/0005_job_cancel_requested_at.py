from django.db import migrations, models
from django.db.models import F


def requested_at_from_flag(apps, schema_editor):
    Job = apps.get_model("jobs", "Job")
    Job.objects.filter(cancel_requested=True).update(cancel_requested_at=F("updated_at"))


class Migration(migrations.Migration):
    dependencies = [
        ("jobs", "0004_trace"),
    ]

    operations = [
        migrations.AddField(
            model_name="job",
            name="cancel_requested_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="job",
            name="cancel_refused_because",
            field=models.CharField(blank=True, max_length=200),
        ),
        migrations.RunPython(requested_at_from_flag, migrations.RunPython.noop),
        migrations.RemoveField(model_name="job", name="cancel_requested"),
    ]
