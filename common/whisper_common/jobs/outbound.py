"""Requests the service makes on a user's behalf (`audio_url` downloads, webhooks), kept off internal networks.

A URL must be http(s) with a host name IDNA can encode (else a 400 `url_refused`, and a permanent failure behind a
redirect); its host is resolved and every address must be public, unless OUTBOUND_ALLOWLIST names the host or a
network holding the addresses. An IPv6 address that carries an IPv4 one (v4-mapped, v4-translated, v4-compatible,
NAT64 in 64:ff9b::/96 and the local-use 64:ff9b:1::/48, 6to4, Teredo, ISATAP) is judged by that IPv4 address too;
site-local fec0::/10 is not public. The request then goes to the checked address itself (the name is not
resolved again, so DNS rebinding cannot swap it), with the original Host header and TLS server name. Each redirect
of a download is checked the same way; webhooks do not follow redirects.

    policy = OutboundPolicy(settings.outbound_allowlist)
    await policy.check("webhook_url", url)                   # OutboundRefused (400) naming the field
    size = await download(policy, client, url, path, max_bytes, deadline_seconds)

A URL may carry credentials (`user:password@`, a pre-signed query string, a token): nothing beyond its scheme, host and
path reaches a log or an API answer (`redact_url`; `outbound_client` puts a filter on httpx's request log).
"""
from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import httpx

from whisper_common.jobs.errors import OutboundRefused, PermanentJobError, TransientJobError, storage_full

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
MAX_REDIRECTS = 5
NAT64 = ipaddress.ip_network("64:ff9b::/96")
LOCAL_NAT64 = ipaddress.ip_network("64:ff9b:1::/48")
IPV4_COMPATIBLE = ipaddress.ip_network("::/96")
IPV4_TRANSLATED = ipaddress.ip_network("::ffff:0:0:0/96")
NOT_PUBLIC_V6 = (ipaddress.ip_network("fec0::/10"), LOCAL_NAT64)
"""Not global although Python's `is_global` says so: site-local (deprecated, still routed on some networks) and the
local-use NAT64 prefix (RFC 8215: a translator of the operator's own)."""


def redact_url(url: str | None) -> str | None:
    """Scheme, host (and port) and path only: no `user:password@`, query string or fragment."""
    if url is None:
        return None
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return "<invalid URL>"
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{port}" if port is not None else host
    return f"{parts.scheme}://{netloc}{parts.path}" if parts.scheme else "<invalid URL>"


class RedactUrls(logging.Filter):
    """httpx logs each request as `HTTP Request: POST <url> "HTTP/1.1 200 OK"`: the URL is redacted in place."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and len(record.args) >= 2:
            record.args = tuple(
                redact_url(str(arg)) if isinstance(arg, httpx.URL) else arg for arg in record.args
            )
        return True


@dataclass(frozen=True)
class Target:
    """A checked URL: where to connect (`address`) and what to say (the URL's host)."""

    url: httpx.URL
    address: str

    def request_url(self) -> httpx.URL:
        return self.url.copy_with(host=self.address)

    def headers(self) -> dict[str, str]:
        host = self.url.host if self.url.port is None else f"{self.url.host}:{self.url.port}"
        return {"Host": host}

    def extensions(self) -> dict[str, str]:
        return {"sni_hostname": self.url.host} if self.url.scheme == "https" else {}


class OutboundPolicy:
    def __init__(self, allowlist: Sequence[str] = ()) -> None:
        self.hosts: set[str] = set()
        self.networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        for entry in allowlist:
            try:
                self.networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                self.hosts.add(entry.lower().strip("[]"))

    def _allowed(self, host: str, address: IPAddress) -> bool:
        if host in self.hosts or str(address) in self.hosts:
            return True
        if any(address in network for network in self.networks):
            return True
        if isinstance(address, ipaddress.IPv6Address) and any(address in network for network in NOT_PUBLIC_V6):
            return False
        embedded = embedded_ipv4(address)
        if embedded is not None:
            return all(self._allowed(host, carried) for carried in embedded)
        return address.is_global and not address.is_multicast

    async def check(self, param: str, url: str) -> Target:
        try:
            parsed = httpx.URL(url)
            host = parsed.host.lower()  # decoded from IDNA here: an invalid label raises
        except (httpx.InvalidURL, TypeError, ValueError):  # an IDNA error is a UnicodeError, a ValueError
            raw = _raw_host(url)
            if raw:
                raise OutboundRefused(param, f"{param}: the host '{raw}' is not a valid host name") from None
            raise OutboundRefused(param, f"{param} is not a valid URL") from None
        if parsed.scheme not in ("http", "https") or not host:
            raise OutboundRefused(param, f"{param} must be an http:// or https:// URL")
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        shown = host[:100]
        try:
            name = host if _is_ip_literal(host) else host.encode("idna").decode("ascii")
        except UnicodeError:  # an empty or over-long label, an invalid punycode label (xn--a)
            raise OutboundRefused(param, f"{param}: the host '{shown}' is not a valid host name") from None
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(name, port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError, ValueError):
            raise OutboundRefused(param, f"{param}: the host '{shown}' cannot be resolved") from None
        addresses = [ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos]
        refused = [address for address in addresses if not self._allowed(host, address)]
        if refused or not addresses:
            raise OutboundRefused(
                param,
                f"{param}: the host '{shown}' resolves to {refused[0] if refused else 'nothing'}, a loopback, private or "
                "link-local address; the operator must allow it in OUTBOUND_ALLOWLIST",
            )
        return Target(parsed, str(addresses[0]))


def _raw_host(url: str) -> str:
    """The host as written, for a message (ASCII-safe, at most 100 characters); empty when there is none."""
    try:
        host = urlsplit(str(url)).hostname or ""
    except ValueError:
        return ""
    return host.encode("ascii", "backslashreplace").decode()[:100]


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def embedded_ipv4(address: IPAddress) -> tuple[ipaddress.IPv4Address, ...] | None:
    """The IPv4 addresses an IPv6 one carries, which reach (or relay to) those IPv4 hosts and so must pass the same
    checks: v4-mapped ::ffff:a.b.c.d, v4-translated ::ffff:0:a.b.c.d, v4-compatible ::a.b.c.d, NAT64 64:ff9b::/96 and
    64:ff9b:1::/48 (RFC 6052's layout for a /48: the IPv4 bytes around the reserved octet), 6to4 2002::/16, Teredo
    2001::/32 (server and client), ISATAP (`…:0:5efe:a.b.c.d`). None for other addresses."""
    if not isinstance(address, ipaddress.IPv6Address):
        return None
    value = int(address)
    low32 = ipaddress.IPv4Address(value & 0xFFFFFFFF)
    if address.ipv4_mapped is not None:
        return (address.ipv4_mapped,)
    if address in IPV4_TRANSLATED or address in NAT64:
        return (low32,)
    if address in LOCAL_NAT64:
        packed = address.packed
        return (ipaddress.IPv4Address(packed[6:8] + packed[9:11]),)
    if address.sixtofour is not None:
        return (address.sixtofour,)
    if address.teredo is not None:
        return address.teredo
    if address in IPV4_COMPATIBLE and value > 1:  # not :: or ::1
        return (low32,)
    if (value >> 32) & 0xFDFFFFFF == 0x00005EFE:  # ISATAP interface id: 0000:5efe or 0200:5efe, then the IPv4
        return (low32,)
    return None


def outbound_client() -> httpx.AsyncClient:
    """The client for `audio_url` downloads and webhooks. No keep-alive: requests go to a pinned IP with the name in
    Host/SNI, and httpcore pools connections by IP alone, so a TLS connection checked for one host would otherwise
    be reused for another host on the same address."""
    for name in ("httpx", "httpcore"):
        log = logging.getLogger(name)
        if not any(isinstance(existing, RedactUrls) for existing in log.filters):
            log.addFilter(RedactUrls())
    return httpx.AsyncClient(
        timeout=httpx.Timeout(30.0, connect=10.0), trust_env=False, limits=httpx.Limits(max_keepalive_connections=0)
    )


def transient_status(status: int) -> bool:
    return status >= 500 or status in (408, 429)


async def download(
    policy: OutboundPolicy, client: httpx.AsyncClient, url: str, destination: Path, max_bytes: int,
    deadline_seconds: float,
) -> int:
    """Fetch `url` into `destination` (at most `max_bytes`, within `deadline_seconds` in all), following checked
    redirects. TransientJobError for timeouts, connection errors, 5xx and 429; PermanentJobError for refused
    addresses, other 4xx and too large."""
    try:
        async with asyncio.timeout(deadline_seconds):  # httpx's timeouts are per read: a trickle would never end
            return await _download(policy, client, url, destination, max_bytes)
    except TimeoutError:
        destination.unlink(missing_ok=True)
        raise TransientJobError(
            f"downloading audio_url took longer than {deadline_seconds:g} s (AUDIO_URL_TIMEOUT_SECONDS)"
        ) from None


async def _download(
    policy: OutboundPolicy, client: httpx.AsyncClient, url: str, destination: Path, max_bytes: int
) -> int:
    current = url
    for _ in range(MAX_REDIRECTS + 1):
        try:
            target = await policy.check("audio_url", current)
        except OutboundRefused as exc:
            raise PermanentJobError(exc.message, "audio_url_refused") from None
        request = client.build_request(
            "GET", target.request_url(), headers=target.headers(), extensions=target.extensions()
        )
        try:
            response = await client.send(request, stream=True, follow_redirects=False)
        except (UnicodeError, httpx.InvalidURL):
            # httpx prepares the redirect it will not follow (response.next_request): a Location whose host IDNA
            # cannot encode fails there, and no later attempt would change that.
            raise PermanentJobError(
                "audio_url redirected to a URL whose host is not a valid host name", "audio_url_refused"
            ) from None
        except httpx.HTTPError as exc:
            raise TransientJobError(f"downloading audio_url failed: {type(exc).__name__}") from None
        try:
            if response.is_redirect and "location" in response.headers:
                try:
                    current = urljoin(str(target.url), response.headers["location"])
                except ValueError:
                    raise PermanentJobError("audio_url redirected to an invalid URL", "audio_url_refused") from None
                continue
            if response.status_code >= 400:
                message = f"downloading audio_url answered HTTP {response.status_code}"
                if transient_status(response.status_code):
                    raise TransientJobError(message)
                raise PermanentJobError(message, "audio_url_failed")
            return await _save(response, destination, max_bytes)
        finally:
            await response.aclose()
    raise PermanentJobError(f"audio_url redirected more than {MAX_REDIRECTS} times", "audio_url_failed")


async def _save(response: httpx.Response, destination: Path, max_bytes: int) -> int:
    declared = int(response.headers.get("content-length") or 0)
    if declared > max_bytes:
        raise PermanentJobError(_too_large(max_bytes), "audio_url_too_large")
    size = 0
    try:
        with open(destination, "wb") as handle:
            async for chunk in response.aiter_bytes(1 << 20):
                size += len(chunk)
                if size > max_bytes:
                    raise PermanentJobError(_too_large(max_bytes), "audio_url_too_large")
                await asyncio.to_thread(handle.write, chunk)
    except httpx.HTTPError as exc:
        destination.unlink(missing_ok=True)
        raise TransientJobError(f"downloading audio_url failed: {type(exc).__name__}") from None
    except OSError as exc:
        destination.unlink(missing_ok=True)
        if storage_full(exc):
            raise TransientJobError("no space left in DATA_DIR for the audio_url download") from None
        raise
    except BaseException:
        destination.unlink(missing_ok=True)
        raise
    return size


def _too_large(max_bytes: int) -> str:
    return f"audio_url is larger than the upload limit of {max_bytes / 2**20:g} MiB (MAX_UPLOAD_MB)"
