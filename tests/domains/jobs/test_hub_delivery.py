"""A mailbox whose subscriber waits with nothing pending lets the hub write its events
itself; anything else (a socket that cannot take it, a gap, a pending event) goes the
subscriber's own way, latest per job."""

import asyncio
from datetime import UTC, datetime

from domains.jobs.stream import DELIVERED_END, IDLE, Mailbox


def _event(seq: int, status: str = "PROGRESS", job_id: int = 1) -> dict:
    return {"job_id": job_id, "seq": seq, "status": status, "at": datetime.now(UTC).isoformat()}


def _waiting(mailbox: Mailbox, offers, timeout: float = 0.05):
    """Offers the events while the subscriber waits; what its get hands out, and whether
    each offer was written by the hub."""

    async def run():
        getting = asyncio.ensure_future(mailbox.get(timeout=timeout))
        await asyncio.sleep(0)  # the subscriber is waiting now
        written = [mailbox.offer(event) for event in offers]
        return await getting, written

    return asyncio.run(run())


def test_a_waiting_subscriber_is_written_by_the_hub_and_not_woken():
    written_events = []
    mailbox = Mailbox(max_jobs=2)
    mailbox.deliver = lambda event: written_events.append(event["seq"]) or True

    item, written = _waiting(mailbox, [_event(2), _event(3), _event(3)])

    assert written == [True, True, False]  # the repeat is not written twice
    assert written_events == [2, 3]
    assert item is IDLE  # nothing woke it: its idle recheck came first
    assert mailbox.delivered == {1: 3}


def test_the_hub_written_end_completes_the_subscriber():
    mailbox = Mailbox(max_jobs=2)
    mailbox.deliver, mailbox.ends_at_terminal = (lambda event: True), True

    item, written = _waiting(mailbox, [_event(2), _event(3, "SUCCESS")], timeout=None)

    assert written == [True, True]
    assert item is DELIVERED_END


def test_a_socket_that_cannot_take_the_frame_leaves_the_latest_state_to_its_subscriber():
    mailbox = Mailbox(max_jobs=2)
    mailbox.deliver = lambda event: False  # above the high-water mark

    item, written = _waiting(mailbox, [_event(2), _event(3)])

    assert written == [False, False]
    assert item["seq"] == 3  # woken, it takes the latest state


def test_a_resuming_subscriber_is_written_only_the_next_seq_and_fills_a_gap_its_way():
    written_events = []
    mailbox = Mailbox(max_jobs=2)
    mailbox.deliver = lambda event: written_events.append(event["seq"]) or True
    mailbox.contiguous = True
    mailbox.delivered[1] = 1

    item, written = _waiting(mailbox, [_event(2), _event(4)])

    assert written == [True, False]
    assert written_events == [2]
    assert item["seq"] == 4  # woken: it reads seq 3 from the log first
