"""Every mutation that starts a job checks Redis before it writes anything."""

from schema import schema
from schema.extensions import RequiresRedis


def _returns_a_job(field) -> bool:
    payload = getattr(field.type, "__strawberry_definition__", None)
    return payload is not None and any(f.python_name == "job" for f in payload.fields)


def test_every_mutation_that_starts_a_job_requires_redis_first():
    mutations = schema.get_type_by_name("Mutation").fields
    starting = [field for field in mutations if _returns_a_job(field)]
    assert len(starting) >= 8, [field.name for field in starting]
    unchecked = [
        field.name
        for field in starting
        if not any(isinstance(extension, RequiresRedis) for extension in field.extensions)
    ]
    assert unchecked == []
