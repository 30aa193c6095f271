"""How a job's events reach the world: one Redis round trip (a Lua script) per event.

The seq is incremented, the event is stored as the job's snapshot, appended to the job's
capped log (a stream whose entry ids are the seqs, so a resume is one XRANGE), and
PUBLISHed to the job's, the owner's and the all-jobs channels.
"""

import json
import logging
from typing import Any

import redis
from django.conf import settings
from django.utils import timezone

from domains.infra.redis import (
    progress_client,
    progress_on_cluster,
    progress_publish,
    progress_publish_command,
)
from domains.jobs.events import (
    EVENT_FIELDS,
    all_jobs_channel,
    decode,
    event_from_job,
    job_channel,
    log_key,
    snapshot_key,
    user_channel,
)
from domains.jobs.models import Job

logger = logging.getLogger(__name__)

# KEYS: snapshot hash, log stream. ARGV: floor seq, ttl seconds, log maxlen, status,
# event body without its opening brace, whether the floor is the row's ('1' or '0'), the
# publish command (PUBLISH, or SPUBLISH on a cluster), the cancel request's time as a JSON
# string ('' when the caller knows of none), the seq the snapshot must still have ('-':
# any), then the channels to publish to (on a cluster only the job's, which shares the
# keys' slot).
# The hash's `cancel` field holds the accepted cancel's time; every event carries it as
# `cancel_requested_at` (null while none), so the latest event alone says so.
# Returns {seq, cancel request or ''}; seq -1 when the job already ended, -2 when Redis has
# lost the job's seq (a restart or a flush) and the floor is not the row's, -3 when the
# snapshot moved past the expected seq (nothing is written then).
_EMIT = """
local cancel = redis.call('HGET', KEYS[1], 'cancel')
local current = redis.call('HGET', KEYS[1], 'status')
if current == 'SUCCESS' or current == 'FAILURE' or current == 'CANCELLED' or current == 'TIMEOUT' then
  return {-1, cancel or ''}
end
if ARGV[9] ~= '-' and (redis.call('HGET', KEYS[1], 'seq') or '') ~= ARGV[9] then
  return {-3, cancel or ''}
end
if ARGV[6] == '0' and redis.call('HEXISTS', KEYS[1], 'seq') == 0 then
  return {-2, cancel or ''}
end
if not cancel and ARGV[8] ~= '' then
  cancel = ARGV[8]
  redis.call('HSET', KEYS[1], 'cancel', cancel)
end
local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
local floor = tonumber(ARGV[1])
if seq <= floor then
  seq = floor + 1
  redis.call('HSET', KEYS[1], 'seq', seq)
end
local event = '{"seq":' .. seq .. ',"cancel_requested_at":' .. (cancel or 'null') .. ',' .. ARGV[5]
redis.call('HSET', KEYS[1], 'event', event, 'status', ARGV[4])
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.pcall('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], seq .. '-0', 'e', event)
redis.call('EXPIRE', KEYS[2], ARGV[2])
for i = 10, #ARGV do
  redis.call(ARGV[7], ARGV[i], event)
end
return {seq, cancel or ''}
"""


def _emit_call(
    *,
    job_id: int,
    owner_id: int | None,
    state: dict[str, Any],
    floor: int,
    floor_is_rows: bool,
    cancel_requested_at: str = "",
    expect_seq: str = "-",
) -> tuple[list[str], list[Any], str, list[str]]:
    """The emit script's keys and arguments, the event's body, and the channels published
    after the script (on a cluster the script publishes in its own slot only)."""
    body = json.dumps(
        {"job_id": job_id, **state, "at": timezone.now().isoformat()},
        default=str,
        separators=(",", ":"),
    )[1:]
    channels = [job_channel(job_id), all_jobs_channel()]
    if owner_id:
        channels.append(user_channel(owner_id))
    in_script, after = (channels[:1], channels[1:]) if progress_on_cluster() else (channels, [])
    keys = [snapshot_key(job_id), log_key(job_id)]
    args = [
        floor,
        int(settings.JOB_SNAPSHOT_TTL.total_seconds()),
        settings.JOB_EVENT_LOG_MAXLEN,
        state["status"],
        body,
        "1" if floor_is_rows else "0",
        progress_publish_command(),
        cancel_requested_at,
        expect_seq,
        *in_script,
    ]
    return keys, args, body, after


def emit(**event: Any) -> tuple[int, bool]:
    """Publish `state` with a seq above `floor` (keywords of `_emit_call`); -1 when the job
    already ended, -2 when Redis has lost the job's seq and `floor` was not read from the
    row, -3 when the snapshot's seq is no longer `expect_seq`. Also returns whether a
    cancel was accepted."""
    keys, args, body, after = _emit_call(**event)
    client = progress_client()  # the process's client of the moment, not the first one's
    seq, cancel = _emit_script()(keys=keys, args=args, client=client)
    seq = int(seq)
    if seq > 0:
        for channel in after:
            event_text = f'{{"seq":{seq},"cancel_requested_at":{cancel or "null"},{body}'
            progress_publish(client, channel, event_text)
    return seq, bool(cancel)


def emit_pipelined(events: list[dict[str, Any]]) -> None:
    """Several emits (keywords of `_emit_call`) in one round trip, their seqs unread; on a
    Redis Cluster, whose pipelines take no scripts across slots, one emit each."""
    if progress_on_cluster():
        for event in events:
            emit(**event)
        return
    pipeline = progress_client().pipeline(transaction=False)
    for event in events:
        keys, args, _, _ = _emit_call(**event)
        _emit_script()(keys=keys, args=args, client=pipeline)
    pipeline.execute()


_script = None


def _emit_script():
    global _script
    if _script is None:
        _script = progress_client().register_script(_EMIT)
    return _script


def cancel_literal(job: Job) -> str:
    """The job's cancel request as the events carry it (a JSON string), or ''."""
    if job.cancel_requested_at is None:
        return ""
    return json.dumps(job.cancel_requested_at.isoformat())


def job_cancel_publish(job: Job, *, event: bool = True) -> None:
    """Tell the job's worker and its subscribers, at once, that a cancel was accepted.

    The snapshot's `cancel` field is what a worker looks for (`domains.jobs.cancellation`,
    and every emit answers it); then, with `event`, the job's latest state is published
    again with `cancel_requested_at` set. That event is conditional on the snapshot's seq:
    if a worker emitted in between, its event already carried the cancel (the field was
    set first), and nothing more is sent. Redis down: the row still holds the cancel, which
    the job's end honours, and the streams read it from there.
    """
    key = snapshot_key(job.pk)
    client = progress_client()
    try:
        client.hset(key, "cancel", cancel_literal(job))
        client.expire(key, int(settings.JOB_SNAPSHOT_TTL.total_seconds()))
        if not event:
            return
        raw, seq = client.hmget(key, "event", "seq")
        state = decode(raw) if raw is not None else event_from_job(job)
        emit(
            job_id=job.pk,
            owner_id=job.owner_id,
            state={name: state.get(name) for name in EVENT_FIELDS},
            floor=max(job.seq, state.get("seq") or 0),
            floor_is_rows=raw is None,
            cancel_requested_at=cancel_literal(job),
            expect_seq=seq or "",
        )
    except redis.RedisError:
        logger.warning("job.cancel_unpublished", extra={"job_id": job.pk}, exc_info=True)
