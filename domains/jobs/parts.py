"""Parallel parts of a job (a chord's header): each counted once, across every worker,
in Redis, however often a part is delivered."""

from django.conf import settings

from domains.infra.redis import sync_client


def job_part_redelivered(*, job_id: int, part_id: str) -> int:
    """Count a redelivery of one part of a job (its worker was lost while running it).

    A part does not claim the job, so its attempts are not the job's: they are counted
    per part, in Redis, where every worker sees them. Returns the part's deliveries so
    far, the first included.
    """
    key = f"job:{job_id}:part:{part_id}:redeliveries"
    with sync_client().pipeline() as pipe:
        pipe.incr(key)
        pipe.expire(key, settings.JOB_SNAPSHOT_TTL)
        redeliveries, _ = pipe.execute()
    return redeliveries + 1


# KEYS: the job's parts-done hash. ARGV: part id, its units, ttl. Returns the sum.
_PART_DONE = """
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
local sum = 0
for _, units in ipairs(redis.call('HVALS', KEYS[1])) do sum = sum + tonumber(units) end
return sum
"""


def job_part_done(*, job_id: int, part_id: str, units: int = 1) -> int:
    """Count a finished part of a job, across every worker; returns the units done so far.

    Counted by part, so a part that runs twice (redelivered) is counted once.
    """
    ttl = int(settings.JOB_SNAPSHOT_TTL.total_seconds())
    script = sync_client().register_script(_PART_DONE)
    return int(script(keys=[f"job:{job_id}:parts_done"], args=[part_id, units, ttl]))
