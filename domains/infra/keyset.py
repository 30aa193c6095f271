"""Reading many rows in keyset batches, so that a job may write between them.

A long read must not hold its cursor open while the job writes (its progress, its own
records): on SQLite the open cursor keeps a read transaction, whose snapshot goes stale
as soon as another connection commits, and the connection's next write is then refused
at once ("database is locked", SQLITE_BUSY_SNAPSHOT; no busy timeout applies). Each batch
here is its own query, read to the end before it is handed over: between batches the
connection holds nothing, so a write starts from the current state on every database,
and memory holds one batch, not the rows.
"""

from collections.abc import Iterator, Sequence
from functools import reduce
from operator import or_

from django.db.models import F, Q, QuerySet


def keyset_batches(rows: QuerySet, *, key: Sequence[str], size: int) -> Iterator[list[tuple]]:
    """The tuples of `rows` (a `values_list` query) in the order of `key`, `size` at a time.

    `key` names fields (paths like `order__created_at` allowed) that are never null and
    together unique per row, such as (..., "id"): each batch resumes after the last key
    of the one before (WHERE key > last ORDER BY key LIMIT size), so no row whose key
    stays put is read twice or skipped, whatever commits meanwhile; rows committed
    meanwhile after the last key are read too, as a query run then would.
    """
    names = [f"keyset_{i}" for i in range(len(key))]
    keyed = rows.annotate(**{name: F(path) for name, path in zip(names, key, strict=True)})
    keyed = keyed.order_by(*key)
    width = len(key)
    last: tuple | None = None
    while True:
        page = keyed if last is None else keyed.filter(_after(key, last))
        batch = list(page[:size])  # read to the end: no cursor stays open
        if not batch:
            return
        last = tuple(batch[-1][-width:])
        yield [row[:-width] for row in batch]
        if len(batch) < size:
            return


def _after(key: Sequence[str], last: tuple) -> Q:
    """Rows whose key comes after `last`: (k1, k2, k3) > (v1, v2, v3), written so that an
    index on the first field bounds the scan: k1 >= v1 AND (k1 > v1 OR k1 = v1 AND k2 > v2
    OR k1 = v1 AND k2 = v2 AND k3 > v3)."""
    later = []
    for n, path in enumerate(key):
        same = dict(zip(key[:n], last[:n], strict=True))
        later.append(Q(**same, **{f"{path}__gt": last[n]}))
    return Q(**{f"{key[0]}__gte": last[0]}) & reduce(or_, later)
