"""bench/socket_memory.py at its smallest: the three targets' rows, each a figure (the
figures themselves are the bench's to judge, not a test's)."""

import pytest

from tests.bench.test_progress_bench import _cells, run_bench


@pytest.mark.slow
def test_smallest_run_prints_a_row_per_target():
    done = run_bench("bench/socket_memory.py", "--count", "5")

    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rows = [_cells(line) for line in done.stdout.splitlines() if line.startswith("| ")]
    assert rows[0] == ["target", "RSS per socket KB", "vs relay"]
    relay, bare, ours = rows[1:]
    assert [relay[0], bare[0], ours[0]] == [
        "relay (websockets, no ASGI)",
        "bare ASGI app, uvicorn",
        "ours: jobProgress subscriber",
    ]
    for row in (relay, bare, ours):
        float(row[1])  # KB, as a number
    assert relay[2] == ""  # the baseline
    assert all(row[2].endswith("x") or row[2].startswith("n/a") for row in (bare, ours))
