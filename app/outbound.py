"""The address policy for every URL the service fetches or posts to (Label Studio sync, webhook
deliveries): no request reaches inside the network unless the admin allowed it.

Each hop's host is resolved here and every address it resolves to must be public (not loopback,
private, link-local -- cloud metadata at 169.254.169.254 included --, multicast, reserved or
unspecified) or inside SOFTLABELS_ALLOWED_NETWORKS. The connection then goes to the address that
was checked (the Host header and TLS name stay the URL's), so a second DNS answer cannot swap it.
Redirects are followed by hand and checked again; credentials never go to another origin; only
http and https; one deadline for the whole exchange and a cap on the bytes read. Errors say what
failed and never carry what the remote sent.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass

import httpx

from app.config import IPNetwork, get_settings, parse_networks
from app.errors import ValidationFailed

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

REDIRECTS = {301, 302, 303, 307, 308}
MAX_REDIRECTS = 5
# Headers that carry a credential: dropped when a redirect leaves the origin they were meant for.
CREDENTIALS = ("authorization", "cookie", "proxy-authorization")


class OutboundError(Exception):
    """A request the service makes failed; the message is safe to show (no remote content)."""


class AddressRefused(OutboundError):
    """The address policy refused the URL (scheme, or an address inside the network)."""


class TooLarge(OutboundError):
    """The reply went past the byte limit the caller set (or the policy's)."""


@dataclass(frozen=True)
class Policy:
    allowed: tuple[IPNetwork, ...] = ()
    deadline_s: float = 60.0
    max_bytes: int = 100 * 1024 * 1024

    @classmethod
    def from_settings(cls, settings: object) -> Policy:
        return cls(
            allowed=parse_networks(str(getattr(settings, "allowed_networks", ""))),
            deadline_s=float(getattr(settings, "outbound_deadline_s", cls.deadline_s)),
            max_bytes=int(getattr(settings, "outbound_max_bytes", cls.max_bytes)),
        )

    def refusal(self, ip: IPAddress) -> str | None:
        """Why `ip` may not be reached, or None."""
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if any(ip in net for net in self.allowed if net.version == ip.version):
            return None
        for kind, flag in (
            ("unspecified", ip.is_unspecified),
            ("loopback", ip.is_loopback),
            ("link-local (cloud metadata)", ip.is_link_local),
            ("private", ip.is_private),
            ("multicast", ip.is_multicast),
            ("reserved", ip.is_reserved),
        ):
            if flag:
                return kind
        return None if ip.is_global else "non-public"


def default_policy() -> Policy:
    return Policy.from_settings(get_settings())


def _resolve(host: str, port: int) -> list[IPAddress]:
    try:
        return [ipaddress.ip_address(host.strip("[]"))]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        raise OutboundError(f"the host {host!r} could not be resolved") from None
    # getaddrinfo answers e.g. "2130706433" or "0x7f.1" with the address they spell.
    return [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]


def check_url(url: str | httpx.URL, policy: Policy) -> IPAddress:
    """The address to connect to for `url`, after the policy checked every address of its host.
    Raises AddressRefused (or OutboundError when the host does not resolve)."""
    u = httpx.URL(str(url))
    if u.scheme not in ("http", "https"):
        raise AddressRefused(f"only http and https URLs are allowed, not {u.scheme or 'none'!r}")
    if not u.host:
        raise AddressRefused("the URL has no host")
    port = u.port or (443 if u.scheme == "https" else 80)
    addresses = _resolve(u.host, port)
    if not addresses:
        raise OutboundError(f"the host {u.host!r} could not be resolved")
    for ip in addresses:
        kind = policy.refusal(ip)
        if kind is not None:
            raise AddressRefused(
                f"{u.host!r} is an address the address policy refuses ({kind}); an admin can "
                "allow its network with SOFTLABELS_ALLOWED_NETWORKS"
            )
    return addresses[0]


def refuse_url(url: str, policy: Policy, field: str = "url") -> None:
    """For an API storing a URL to call later: a 422 naming `field` when the policy refuses it
    now. A host that does not resolve yet is let through (it is checked again at each call)."""
    try:
        check_url(url, policy)
    except AddressRefused as exc:
        raise ValidationFailed.field(field, str(exc)) from None
    except OutboundError:
        pass


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes
    url: str


def _origin(u: httpx.URL) -> tuple[str, str, int | None]:
    return u.scheme, u.host, u.port or (443 if u.scheme == "https" else 80)


def _pinned(u: httpx.URL, ip: IPAddress) -> tuple[httpx.URL, dict[str, str], dict[str, object]]:
    """The URL with the checked address as its host; Host and the TLS name stay the URL's."""
    host_header = u.netloc.decode("ascii")
    extensions: dict[str, object] = {"sni_hostname": u.host} if u.scheme == "https" else {}
    return u.copy_with(host=str(ip)), {"Host": host_header}, extensions


def request(
    method: str,
    url: str,
    *,
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
    policy: Policy | None = None,
    deadline_s: float | None = None,
    max_bytes: int | None = None,
    truncate: bool = False,
) -> Reply:
    """One HTTP exchange under the policy: redirects followed (and checked) up to MAX_REDIRECTS,
    the reply read up to `max_bytes` within `deadline_s` all told. A longer reply is an error,
    or with `truncate` cut short (for callers that only need the status)."""
    policy = policy or default_policy()
    limit = policy.max_bytes if max_bytes is None else max_bytes
    deadline = time.monotonic() + (policy.deadline_s if deadline_s is None else deadline_s)
    current = httpx.URL(url)
    send_headers = dict(headers or {})
    origin = _origin(current)
    with httpx.Client(follow_redirects=False, trust_env=False) as client:
        for _ in range(MAX_REDIRECTS + 1):
            ip = check_url(current, policy)
            target, host, extensions = _pinned(current, ip)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise OutboundError("no complete reply before the deadline")
            try:
                with client.stream(
                    method,
                    target,
                    headers={**send_headers, **host},
                    content=body,
                    timeout=httpx.Timeout(remaining),
                    extensions=extensions,
                ) as resp:
                    location = resp.headers.get("location")
                    if resp.status_code in REDIRECTS and location:
                        nxt = current.join(location)
                        if _origin(nxt) != origin:
                            send_headers = _without(send_headers, CREDENTIALS)
                        if resp.status_code == 303 or (
                            resp.status_code in (301, 302) and method == "POST"
                        ):
                            method, body = "GET", None
                        current = nxt
                        continue
                    data = _read(resp.iter_bytes(), limit, deadline, truncate)
                    return Reply(resp.status_code, data, str(current))
            except httpx.TimeoutException:
                raise OutboundError("no complete reply before the deadline") from None
            except httpx.ConnectError:
                raise OutboundError("the connection was refused or failed") from None
            except httpx.HTTPError as exc:
                raise OutboundError(f"the exchange failed ({type(exc).__name__})") from None
    raise OutboundError(f"more than {MAX_REDIRECTS} redirects")


def _without(headers: dict[str, str], names: Iterable[str]) -> dict[str, str]:
    drop = set(names)
    return {k: v for k, v in headers.items() if k.lower() not in drop}


def _read(chunks: Iterable[bytes], limit: int, deadline: float, truncate: bool) -> bytes:
    parts, seen = [], 0
    for chunk in chunks:
        seen += len(chunk)
        if seen > limit:
            if truncate:
                break
            raise TooLarge(f"the reply is over the {limit}-byte limit")
        if time.monotonic() > deadline:
            raise OutboundError("no complete reply before the deadline")
        parts.append(chunk)
    return b"".join(parts)
