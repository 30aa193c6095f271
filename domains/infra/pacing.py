"""Holding a long read to a rate, so that one big job does not starve a busy database."""

import time


class Pace:
    """Sleeps while the units done since it started run ahead of `rate` a second (0: no
    cap); checked at each step of the work."""

    def __init__(self, rate: float):
        self.rate = rate
        self.started = time.monotonic()

    def wait(self, units: int) -> None:
        if self.rate:
            ahead = units / self.rate - (time.monotonic() - self.started)
            if ahead > 0:
                time.sleep(ahead)
