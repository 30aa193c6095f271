"""Reads shared by connections that ask the same thing at once (schema/streams.py
Coalesced): the access checks and token reads of a burst of sockets with the same
credentials. Each asker gets a read begun after it asked; a burst costs two reads, not one
per asker."""

import asyncio

import pytest

from schema.streams import Coalesced


class Reads:
    """A read per call, each held until released, numbered in the order they began."""

    def __init__(self):
        self.began: list[str] = []
        self.gates: list[asyncio.Event] = []
        self.fail_next = False

    async def __call__(self, key: str) -> int:
        self.began.append(key)
        number = len(self.began)
        gate = asyncio.Event()
        self.gates.append(gate)
        failing, self.fail_next = self.fail_next, False
        await gate.wait()
        if failing:
            raise LookupError(f"read {number} failed")
        return number

    async def release(self, count: int) -> None:
        """Let the first `count` reads finish, and every task run what follows."""
        while len(self.gates) < count:
            await asyncio.sleep(0)
        for gate in self.gates[:count]:
            gate.set()
        for _ in range(10):
            await asyncio.sleep(0)


def test_askers_during_a_read_share_the_next_one_begun_after_they_asked():
    async def scenario():
        reads = Reads()
        shared = Coalesced(reads)
        first = asyncio.ensure_future(shared("token"))
        await asyncio.sleep(0)  # the first read has begun
        burst = [asyncio.ensure_future(shared("token")) for _ in range(50)]
        other = asyncio.ensure_future(shared("other token"))
        await reads.release(1)
        assert first.result() == 1
        assert not any(t.done() for t in burst)
        await reads.release(3)
        return first.result(), [t.result() for t in burst], other.result(), reads.began

    first, burst, other, began = asyncio.run(scenario())

    assert first == 1
    # The burst asked after read 1 began: it shares the next read of its key, begun after.
    assert set(burst) == {3}
    assert other == 2
    assert began == ["token", "other token", "token"]


def test_a_failed_read_fails_each_of_its_askers_and_the_next_ask_reads_again():
    async def scenario():
        reads = Reads()
        shared = Coalesced(reads)
        reads.fail_next = True
        failing = [asyncio.ensure_future(shared("token")) for _ in range(3)]
        await reads.release(1)
        # (the two that asked while read 1 ran share read 2)
        await reads.release(2)
        after = asyncio.ensure_future(shared("token"))
        await reads.release(3)
        return failing, after.result(), len(reads.began)

    failing, after, reads_made = asyncio.run(scenario())

    with pytest.raises(LookupError):
        failing[0].result()
    assert [t.result() for t in failing[1:]] == [2, 2]
    assert after == 3
    assert reads_made == 3


def test_an_asker_that_goes_away_cancels_nobody_elses_read():
    async def scenario():
        reads = Reads()
        shared = Coalesced(reads)
        leaving = asyncio.ensure_future(shared("token"))
        staying = asyncio.ensure_future(shared("token"))
        await asyncio.sleep(0)
        leaving.cancel()
        await reads.release(1)  # the read it began still ends, and the next one begins
        await reads.release(2)
        return leaving.cancelled(), staying.result()

    cancelled, answer = asyncio.run(scenario())

    assert cancelled
    assert answer == 2
