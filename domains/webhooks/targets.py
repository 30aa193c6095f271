"""Where a webhook may be sent: checked when an endpoint is registered and again at each
send, on every address its host resolves to, and the connection goes only to an address
that passed (a name that resolves elsewhere between the check and the connect cannot
lead the request inside).

http or https only; loopback and private addresses only while WEBHOOK_ALLOW_PRIVATE is on
(development); link-local addresses (169.254.0.0/16, fe80::/10: cloud metadata lives
there) and the other metadata addresses never, nor multicast or unspecified ones.
"""

import ipaddress
import socket
from urllib.parse import urlsplit

from django.conf import settings
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError
from urllib3.util import connection

from domains.webhooks.errors import WebhookError, WebhookErrorCode

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Metadata services outside link-local space (Alibaba, AWS over IPv6, Oracle).
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a) for a in ("100.100.100.200", "fd00:ec2::254", "192.0.0.192")
)


class TargetRefused(WebhookError):
    def __init__(
        self, message: str, *, code: WebhookErrorCode = WebhookErrorCode.TARGET_NOT_ALLOWED
    ):
        super().__init__(message, code=code, field="url")


def address_refusal(address: IPAddress, *, allow_private: bool) -> str | None:
    """Why a request may not go to `address` (None: it may)."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    if address in METADATA_ADDRESSES:
        return f"{address} is a cloud metadata address"
    if address.is_link_local:
        return f"{address} is a link-local address"
    if address.is_multicast or address.is_unspecified:
        return f"{address} is not a unicast address"
    if not (allow_private or address.is_global):
        return f"{address} is a private or loopback address"
    return None


def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address `host` resolves to (a literal address resolves to itself, no DNS)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as error:
        raise TargetRefused(f"{host} does not resolve: {error}") from None
    return list(dict.fromkeys(ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos))


def checked_addresses(host: str, port: int) -> list[IPAddress]:
    """The addresses of `host`, once every one of them passed (one refused refuses all)."""
    allow_private = settings.WEBHOOK_ALLOW_PRIVATE
    addresses = resolve(host, port)
    for address in addresses:
        if refusal := address_refusal(address, allow_private=allow_private):
            raise TargetRefused(f"Webhooks may not be sent to {host}: {refusal}.")
    return addresses


def webhook_url_check(url: str) -> None:
    """Raise TargetRefused unless `url` is a target webhooks may be sent to now."""
    try:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as error:
        raise TargetRefused(
            f"Not a valid URL: {error}", code=WebhookErrorCode.INVALID_URL
        ) from None
    if parts.scheme not in ("http", "https"):
        raise TargetRefused(
            "Only http and https URLs are allowed.", code=WebhookErrorCode.INVALID_URL
        )
    if not parts.hostname:
        raise TargetRefused("The URL has no host.", code=WebhookErrorCode.INVALID_URL)
    if parts.username or parts.password:
        raise TargetRefused(
            "The URL may not carry credentials; verify the signature instead.",
            code=WebhookErrorCode.INVALID_URL,
        )
    checked_addresses(parts.hostname, port)


class _Checked:
    """A urllib3 connection that connects only to its host's checked addresses."""

    def _new_conn(self) -> socket.socket:
        try:
            addresses = checked_addresses(self._dns_host, self.port)
        except TargetRefused as refused:
            raise NewConnectionError(self, refused.message) from None
        last_error: OSError | None = None
        for address in addresses:
            try:
                return connection.create_connection(
                    (str(address), self.port),
                    self.timeout,
                    source_address=self.source_address,
                    socket_options=self.socket_options,
                )
            except TimeoutError as error:
                raise ConnectTimeoutError(self, f"Connection to {self.host} timed out.") from error
            except OSError as error:
                last_error = error
        raise NewConnectionError(self, f"Failed to establish a new connection: {last_error}")


class CheckedHTTPConnection(_Checked, HTTPConnection):
    pass


class CheckedHTTPSConnection(_Checked, HTTPSConnection):
    pass


class CheckedHTTPConnectionPool(HTTPConnectionPool):
    ConnectionCls = CheckedHTTPConnection


class CheckedHTTPSConnectionPool(HTTPSConnectionPool):
    ConnectionCls = CheckedHTTPSConnection


CHECKED_POOLS = {"http": CheckedHTTPConnectionPool, "https": CheckedHTTPSConnectionPool}
