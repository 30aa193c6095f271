"""The image pipeline (optimized original + three thumbnails) on 12 MP JPEGs, against two
bare Pillow scripts doing the same work in the same run:

- naive: per output size, a full decode, EXIF transpose, LANCZOS to size (also shown:
  naive with one full decode shared by all sizes, a stronger baseline);
- draft: per output size, a reduced-size draft decode, LANCZOS to size, the transpose.

Figures, each a median over rounds that interleave the three so they share the machine:
- time per image in one process: our four parts back to back (decode, encode, storage,
  rows and progress) against each script;
- time per image end to end through Celery (upload -> job SUCCESS, real worker with two
  processes, so the parts run two at a time) against each script: one image at a time
  (latency), and the whole set uploaded at once (throughput);
- CPU time per image, which the machine's other load does not inflate: the worker's
  processes (Celery's own work included) while they drain the set, against each script;
- peak memory per task: each of our parts, and the naive script, in a fresh process
  (peak RSS minus RSS before the work).

    .venv/bin/python bench/images.py [--images 4] [--rounds 3]
"""

import argparse
import io
import os
import statistics
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import psutil
from PIL import ExifTags, Image, ImageFilter, ImageOps

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from django.conf import settings
from django.core.files import File

from bench import harness
from domains.jobs.attempts import job_attempt_start
from domains.jobs.ending import job_end
from domains.jobs.models import ACTIVE_STATUSES, Job, JobStatus
from domains.jobs.reporter import JobReporter
from domains.media.models import Image as ImageRow
from domains.media.services import (
    image_optimize,
    image_processing_result,
    image_processing_start,
    image_upload,
    thumbnail_make,
)
from testbed.factories import make_user

SIZE = (4000, 3000)  # 12 MP
OUTPUTS = {"optimized": settings.IMAGE_OPTIMIZED_MAX_SIDE, **settings.IMAGE_THUMBNAIL_BOXES}
QUALITY = settings.IMAGE_QUALITY


def _photo(path: Path, seed: int) -> None:
    """A photo-like 12 MP JPEG (smooth gradients plus grain) with EXIF orientation and GPS."""
    small = Image.merge(
        "RGB",
        [
            Image.linear_gradient("L").rotate(seed * 40 + 90 * band).resize(SIZE)
            for band in range(3)
        ],
    )
    grain = Image.effect_noise(SIZE, 24).convert("RGB")
    picture = Image.blend(small, grain, 0.25).filter(ImageFilter.GaussianBlur(1))
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6
    exif.get_ifd(ExifTags.IFD.GPSInfo)[ExifTags.GPS.GPSLatitude] = (52.0, 31.0, 12.5)
    picture.save(path, format="JPEG", quality=92, exif=exif)


def _fit(size: tuple[int, int], box: int) -> tuple[int, int]:
    scale = min(box / size[0], box / size[1], 1.0)
    return max(1, round(size[0] * scale)), max(1, round(size[1] * scale))


def _save(picture: Image.Image) -> int:
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG", quality=QUALITY, optimize=True, progressive=True)
    return buffer.tell()


def naive_script(path: Path) -> None:
    """Per output, as a task per size would: full decode, transpose, LANCZOS to size."""
    for box in OUTPUTS.values():
        with Image.open(path) as opened:
            upright = ImageOps.exif_transpose(opened)
        _save(upright.resize(_fit(upright.size, box), Image.Resampling.LANCZOS))


def naive_once_script(path: Path) -> None:
    """A stronger naive baseline: one full decode shared by every output."""
    with Image.open(path) as opened:
        upright = ImageOps.exif_transpose(opened)
    for box in OUTPUTS.values():
        _save(upright.resize(_fit(upright.size, box), Image.Resampling.LANCZOS))


def draft_script(path: Path) -> None:
    for box in OUTPUTS.values():
        with Image.open(path) as opened:
            target = _fit(opened.size, box)
            opened.draft("RGB", target)
            resized = opened.resize(target, Image.Resampling.LANCZOS)
            resized.info["exif"] = opened.info.get("exif", b"")
        _save(ImageOps.exif_transpose(resized))


def _uploaded(owner, path: Path) -> ImageRow:
    with path.open("rb") as handle:
        return image_upload(viewer=owner, upload=File(handle, name=path.name))


def _run_parts(image: ImageRow) -> None:
    """What the worker runs for one image, minus the broker: claim, four parts, finish."""
    _, reporter = job_attempt_start(job_id=image.job_id)
    reporter.started()
    image_processing_start(image=image, reporter=reporter)
    image_optimize(image=image, reporter=JobReporter(Job.objects.get(pk=image.job_id)))
    for size_name in settings.IMAGE_THUMBNAIL_BOXES:
        thumbnail_make(
            image=image, size_name=size_name, reporter=JobReporter(Job.objects.get(pk=image.job_id))
        )
    job_end(
        job_id=image.job_id,
        status=JobStatus.SUCCESS,
        result=image_processing_result(image=image),
    )


def _in_process_round(owner, paths: list[Path]) -> tuple[float, float]:
    """Seconds per image: the upload's checks and storing, then the four parts."""
    began = time.perf_counter()
    uploads = [_uploaded(owner, path) for path in paths]
    uploaded_at = time.perf_counter()
    for image in uploads:
        _run_parts(image)
    return (uploaded_at - began) / len(paths), (time.perf_counter() - uploaded_at) / len(paths)


def _upload_and_wait(owner, path: Path) -> None:
    """Upload, then wait for the worker to end the job."""
    image = _uploaded(owner, path)
    while not Job.objects.get(pk=image.job_id).is_terminal:
        time.sleep(0.005)
    assert Job.objects.get(pk=image.job_id).status == JobStatus.SUCCESS


def _set_through_celery(owner, paths: list[Path]) -> float:
    """Seconds per image when the whole set is uploaded at once and the worker drains it."""
    began = time.perf_counter()
    job_ids = [_uploaded(owner, path).job_id for path in paths]
    while Job.objects.filter(pk__in=job_ids, status__in=ACTIVE_STATUSES).exists():
        time.sleep(0.005)
    assert not Job.objects.filter(pk__in=job_ids).exclude(status=JobStatus.SUCCESS).exists()
    return (time.perf_counter() - began) / len(paths)


def _worker_cpu_seconds(pid: int) -> float:
    """CPU time used so far by a worker: its main process and its pool's processes."""
    root = psutil.Process(pid)
    return sum(sum(p.cpu_times()[:2]) for p in [root, *root.children(recursive=True)])


def _cpu_per_image(run, paths: list[Path]) -> float:
    began = time.process_time()
    for path in paths:
        run(path)
    return (time.process_time() - began) / len(paths)


def _per_image(run, paths: list[Path]) -> float:
    began = time.perf_counter()
    for path in paths:
        run(path)
    return (time.perf_counter() - began) / len(paths)


def _peak_mb(*args: str) -> float:
    out = subprocess.run(
        [sys.executable, __file__, "--memory", *args], capture_output=True, text=True, check=True
    )
    return float(out.stdout.split()[-1])


def _peak_rss_reset() -> int:
    """Reset this process's peak RSS to its current RSS (Linux), and return that.

    getrusage's maxrss would not do: it survives exec, so a child starts with its parent's.
    """
    Path("/proc/self/clear_refs").write_text("5")
    return psutil.Process().memory_info().rss


def _peak_rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def _memory_child(kind: str, argument: str) -> None:
    before = _peak_rss_reset()
    scripts = {"naive": naive_script, "naive_once": naive_once_script, "draft": draft_script}
    if kind in scripts:
        scripts[kind](Path(argument))
    else:
        image = ImageRow.objects.get(pk=int(argument))
        reporter = JobReporter(Job.objects.get(pk=image.job_id))
        if kind == "optimized":
            image_optimize(image=image, reporter=reporter)
        else:
            thumbnail_make(image=image, size_name=kind, reporter=reporter)
    print((_peak_rss() - before) / 2**20)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    options = parser.parse_args()
    folder = Path(tempfile.mkdtemp(dir=harness.RUN_DIR))
    paths = [folder / f"photo-{i}.jpg" for i in range(options.images)]
    for seed, path in enumerate(paths):
        _photo(path, seed)
    owner = make_user(email="bench-images@example.com")
    from config.celery import app

    # In-process rounds: nothing may consume the tasks that image_upload sends.
    timings: dict[str, list[float]] = {
        "naive": [],
        "naive_once": [],
        "draft": [],
        "ours": [],
        "upload": [],
        "celery": [],
        "celery_set": [],
        "celery_cpu": [],
        "naive_cpu": [],
        "draft_cpu": [],
    }
    for _ in range(options.rounds):
        timings["naive"].append(_per_image(naive_script, paths))
        timings["naive_once"].append(_per_image(naive_once_script, paths))
        timings["draft"].append(_per_image(draft_script, paths))
        upload, parts = _in_process_round(owner, paths)
        timings["upload"].append(upload)
        timings["ours"].append(parts)
    app.control.purge()
    sample = _uploaded(owner, paths[0])
    app.control.purge()

    from testbed.stack import start_worker

    worker = start_worker(name="bench-images", concurrency=2, LOG_LEVEL="WARNING")
    try:
        for _ in range(options.rounds):
            timings["naive"].append(_per_image(naive_script, paths))
            timings["draft"].append(_per_image(draft_script, paths))
            timings["celery"].append(_per_image(partial(_upload_and_wait, owner), paths))
            worker_cpu = _worker_cpu_seconds(worker.pid)
            timings["celery_set"].append(_set_through_celery(owner, paths))
            timings["celery_cpu"].append(
                (_worker_cpu_seconds(worker.pid) - worker_cpu) / len(paths)
            )
            timings["naive_cpu"].append(_cpu_per_image(naive_script, paths))
            timings["draft_cpu"].append(_cpu_per_image(draft_script, paths))
    finally:
        worker.stop()

    naive, draft = statistics.median(timings["naive"]), statistics.median(timings["draft"])
    ours, celery = statistics.median(timings["ours"]), statistics.median(timings["celery"])
    print(f"load average (1 min): {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    print(
        f"image pipeline: optimized (fit {settings.IMAGE_OPTIMIZED_MAX_SIDE}) + thumbnails "
        f"{list(settings.IMAGE_THUMBNAIL_BOXES.values())}, {options.images} x "
        f"{SIZE[0]}x{SIZE[1]} JPEG, {options.rounds} rounds, ms per image"
    )
    print(harness.row("ours in-process vs naive", ours * 1000, naive * 1000, "ms"))
    print(harness.row("ours in-process vs draft", ours * 1000, draft * 1000, "ms"))
    naive_once = statistics.median(timings["naive_once"])
    print(harness.row("ours in-process vs naive, 1 decode", ours * 1000, naive_once * 1000, "ms"))
    print(harness.row("ours via Celery (2 procs) vs naive", celery * 1000, naive * 1000, "ms"))
    print(harness.row("ours via Celery (2 procs) vs draft", celery * 1000, draft * 1000, "ms"))
    celery_set = statistics.median(timings["celery_set"])
    print(harness.row("ours via Celery, whole set vs naive", celery_set * 1000, naive * 1000, "ms"))
    print(harness.row("ours via Celery, whole set vs draft", celery_set * 1000, draft * 1000, "ms"))
    cpu = {
        name: statistics.median(timings[f"{name}_cpu"]) * 1000
        for name in ("celery", "naive", "draft")
    }
    print(harness.row("CPU: worker processes vs naive", cpu["celery"], cpu["naive"], "ms"))
    print(harness.row("CPU: worker processes vs draft", cpu["celery"], cpu["draft"], "ms"))
    print(
        f"  upload check + store (not in the scripts): {statistics.median(timings['upload']) * 1000:.1f} ms"
    )
    naive_mb = _peak_mb("naive", str(paths[0]))
    print(
        harness.row("peak memory: draft script", _peak_mb("draft", str(paths[0])), naive_mb, "MB")
    )
    for part in ["optimized", *settings.IMAGE_THUMBNAIL_BOXES]:
        print(
            harness.row(f"peak memory: {part} task", _peak_mb(part, str(sample.pk)), naive_mb, "MB")
        )


if __name__ == "__main__":
    if sys.argv[1:2] == ["--memory"]:
        _memory_child(sys.argv[2], sys.argv[3])
    else:
        main()
