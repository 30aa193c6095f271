"""Persisted documents, one mechanism for every transport (HTTP and websockets):

- Automatic persisted queries as Apollo defines them: a client sends
  `extensions.persistedQuery.sha256Hash` alone; an unknown hash is answered
  PERSISTED_QUERY_NOT_FOUND, and the client sends the document with its hash once, which
  registers it in Redis for GRAPHQL_APQ_TTL seconds after its last use. A hash that is not
  its document's is refused (PERSISTED_QUERY_HASH_MISMATCH). Anyone may register, so what
  is stored is bounded before it is stored: a document over GRAPHQL_APQ_MAX_BYTES is
  refused (PERSISTED_QUERY_TOO_LARGE), each client (a viewer, else an address) registers
  at most THROTTLE_APQ_REGISTER_PER_MINUTE a minute (RATE_LIMITED), and a document that
  does not validate or is over a limit (depth, aliases, cost) runs, to answer its error,
  but is not stored.
- Trusted documents: with a manifest configured (GRAPHQL_TRUSTED_DOCUMENTS), only its
  documents run. A hash it does not list is PERSISTED_QUERY_NOT_IN_LIST (so that an APQ
  client does not retry with the document), a document it does not list
  QUERY_NOT_IN_SAFELIST.
"""

import hashlib
import json
import logging
from collections.abc import Awaitable, Callable
from functools import cache
from pathlib import Path
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from graphql import GraphQLError, parse, specified_rules

from domains.accounts.throttle import RateLimited, ThrottledAction, throttle_attempt
from domains.infra.redis import async_client

logger = logging.getLogger(__name__)

_KEY = "apq:{}"
# Whose budget a registration draws on (streams.viewer_key), or how to find out.
Client = str | Callable[[], Awaitable[str]]


class PersistedQueryRefused(Exception):
    """The request's document cannot be run as sent: the error says what to send."""

    def __init__(
        self, message: str, code: str, *, status: int = 400, headers: dict[str, str] | None = None
    ):
        super().__init__(message)
        self.error = {"message": message, "extensions": {"code": code}}
        self.code = code
        self.status = status  # over HTTP
        self.headers = headers or {}


def document_hash(document: str) -> str:
    return hashlib.sha256(document.encode()).hexdigest()


@cache
def trusted_documents() -> dict[str, str] | None:
    """The manifest's documents by hash, or None when any document may run."""
    if not settings.GRAPHQL_TRUSTED_DOCUMENTS:
        return None
    manifest = json.loads(Path(settings.GRAPHQL_TRUSTED_DOCUMENTS).read_text())
    if isinstance(manifest, dict) and isinstance(manifest.get("operations"), list):
        return {op["id"]: op["body"] for op in manifest["operations"]}  # Apollo's format
    return dict(manifest)  # GraphQL Codegen's: {hash: document}


def _requested_hash(extensions: dict[str, Any] | None) -> str | None:
    persisted = (extensions or {}).get("persistedQuery")
    if persisted is None:
        return None
    if (
        not isinstance(persisted, dict)
        or persisted.get("version") != 1
        or not isinstance(persisted.get("sha256Hash"), str)
    ):
        raise PersistedQueryRefused(
            'Send extensions.persistedQuery as {"version": 1, "sha256Hash": "<sha256 of the '
            'document, hex>"}.',
            "PERSISTED_QUERY_INVALID",
        )
    return persisted["sha256Hash"].lower()


def _trusted(query: str | None, sha: str | None, manifest: dict[str, str]) -> str:
    if sha is not None:
        document = manifest.get(sha)
        if document is None or (query is not None and document_hash(query) != sha):
            raise PersistedQueryRefused(
                "This server runs only its trusted documents, and this hash is not one.",
                "PERSISTED_QUERY_NOT_IN_LIST",
            )
        return document
    if query is None or document_hash(query) not in manifest:
        raise PersistedQueryRefused(
            "This server runs only its trusted documents: send one of them, by its hash in "
            "extensions.persistedQuery.",
            "QUERY_NOT_IN_SAFELIST",
        )
    return query


def _document_refused(document: str) -> bool:
    """Whether the schema would refuse the document before running it: it does not parse,
    does not validate, or is over a document limit."""
    from schema import schema
    from schema.extensions import document_limits
    from schema.limits import Refused, document_measure

    try:
        parsed = parse(document, max_tokens=settings.GRAPHQL_MAX_TOKENS)
    except GraphQLError:
        return True
    from strawberry.schema.schema import validate_document

    if validate_document(schema._schema, parsed, tuple(specified_rules)):
        return True
    limits = document_limits()
    try:
        limits.check(document_measure(parsed, cap=limits.max_cost + 1, max_page=limits.max_page))
    except Refused:
        return True
    return False


async def _register(key: str, sha: str, query: str, client: Client) -> None:
    """Store an APQ document once its size, the client's budget and the schema allow it."""
    if len(query.encode()) > settings.GRAPHQL_APQ_MAX_BYTES:
        raise PersistedQueryRefused(
            f"A persisted document may be at most {settings.GRAPHQL_APQ_MAX_BYTES:,} bytes: "
            "send this one without extensions.persistedQuery.",
            "PERSISTED_QUERY_TOO_LARGE",
        )
    try:
        await sync_to_async(throttle_attempt, thread_sensitive=False)(
            action=ThrottledAction.APQ_REGISTER,
            account=None,
            address=client if isinstance(client, str) else await client(),
        )
    except RateLimited as limited:
        raise PersistedQueryRefused(
            "Too many persisted documents registered from this client: try again in "
            f"{limited.retry_after} seconds, or send the document without "
            "extensions.persistedQuery.",
            "RATE_LIMITED",
            status=429,
            headers={"Retry-After": str(limited.retry_after)},
        ) from None
    if await sync_to_async(_document_refused, thread_sensitive=False)(query):
        logger.info("graphql.persisted_query_not_registered", extra={"hash": sha})
        return  # it runs, so that the client gets the schema's coded error
    await async_client().set(key, query, ex=settings.GRAPHQL_APQ_TTL)
    logger.info("graphql.persisted_query_registered", extra={"hash": sha})


async def persisted_document(
    query: str | None, extensions: dict[str, Any] | None, *, client: Client
) -> str | None:
    """The document to run for a request's `query` and `extensions` (the query itself when
    no persisted query is asked for), or PersistedQueryRefused."""
    sha = _requested_hash(extensions)
    manifest = trusted_documents()
    if manifest is not None:
        return _trusted(query, sha, manifest)
    if sha is None:
        return query
    key = _KEY.format(sha)
    if query is None:
        stored = await async_client().getex(key, ex=settings.GRAPHQL_APQ_TTL)
        if stored is None:
            raise PersistedQueryRefused("PersistedQueryNotFound", "PERSISTED_QUERY_NOT_FOUND")
        return stored
    if document_hash(query) != sha:
        raise PersistedQueryRefused(
            "provided sha does not match query: the hash is the hex sha256 of the document "
            "exactly as sent.",
            "PERSISTED_QUERY_HASH_MISMATCH",
        )
    await _register(key, sha, query, client)
    return query
