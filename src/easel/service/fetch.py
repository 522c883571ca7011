"""Fetching client-named images (URLs and data URIs) without becoming an SSRF proxy.

The rules (docs/security.md has the long form):

- Schemes: `http` and `https` go to the network; `data:` URIs are decoded locally. Nothing else.
- No userinfo (`user:pass@host`) in URLs. Ports: 80 and 443 only, unless the host is allow-listed.
- The host is resolved here (`socket.getaddrinfo`, bounded by the deadline) and EVERY resolved address is
  checked (`blocked_reason`): loopback, private, link-local, CGNAT, multicast, unspecified, reserved,
  documentation and benchmarking ranges, broadcast, the cloud metadata addresses, and the IPv6 forms that
  embed an IPv4 address (IPv4-mapped, 6to4, NAT64) are judged by the embedded address. One bad answer
  refuses the URL.
- The connection is made to the vetted address itself (the URL is rewritten to the IP; the original
  `Host` header and, for https, the TLS SNI / certificate name are kept), so a second DNS answer cannot
  rebind the request to another address. No proxies from the environment, no connection reuse.
- Redirects are followed by hand, at most `fetch_max_redirects`, and every hop is checked again.
- The body is streamed with a byte cap (`fetch_max_bytes`), all hops share one total deadline
  (`fetch_timeout_seconds`), compressed transfer encodings are refused (no gzip bombs).
- Content-Type must be image/png, image/jpeg or image/webp; `application/octet-stream` (or none) is
  accepted only when the bytes start with a PNG, JPEG or WebP signature.
- Hosts in `fetch_allow_hosts` (exact host name or IP literal, as written in the URL) skip the address
  check and the port rule, and nothing else.

Every refusal is a `ValidationFailed` naming the client's field (a 400).
"""

from __future__ import annotations

import base64
import binascii
import concurrent.futures
import ipaddress
import re
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes

import httpx

from easel.domain.errors import ValidationFailed
from easel.domain.urls import MAX_URL_LENGTH
from easel.settings import Settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

ALLOWED_CONTENT_TYPES = frozenset({"image/png", "image/jpeg", "image/webp"})
# Sent by many object stores for anything; accepted only when the bytes sniff as an allowed image.
GENERIC_CONTENT_TYPES = frozenset({"application/octet-stream", "binary/octet-stream", ""})
DEFAULT_PORTS = {"http": 80, "https": 443}
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
MAX_ADDRESSES_TRIED = 4  # of a host's (all vetted) addresses, when connections fail
USER_AGENT = "Easel-ImageFetcher/1.0"

_V4 = ipaddress.IPv4Network
_V6 = ipaddress.IPv6Network

# Checked in order; the first match names the reason. Anything else that Python does not consider
# globally routable is refused afterwards as "not a public address".
BLOCKED_V4: tuple[tuple[ipaddress.IPv4Network, str], ...] = (
    (_V4("169.254.169.254/32"), "the cloud metadata address"),
    (_V4("168.63.129.16/32"), "the Azure platform (metadata) address"),
    (_V4("100.100.100.200/32"), "the Alibaba Cloud metadata address"),
    (_V4("0.0.0.0/8"), "an unspecified ('this network') address"),
    (_V4("10.0.0.0/8"), "a private address"),
    (_V4("100.64.0.0/10"), "a carrier-grade NAT (shared) address"),
    (_V4("127.0.0.0/8"), "a loopback address"),
    (_V4("169.254.0.0/16"), "a link-local address"),
    (_V4("172.16.0.0/12"), "a private address"),
    (_V4("192.0.0.0/24"), "an IETF protocol-assignment address"),
    (_V4("192.0.2.0/24"), "a documentation address"),
    (_V4("192.88.99.0/24"), "a 6to4 relay anycast address"),
    (_V4("192.168.0.0/16"), "a private address"),
    (_V4("198.18.0.0/15"), "a benchmarking address"),
    (_V4("198.51.100.0/24"), "a documentation address"),
    (_V4("203.0.113.0/24"), "a documentation address"),
    (_V4("224.0.0.0/4"), "a multicast address"),
    (_V4("255.255.255.255/32"), "the broadcast address"),
    (_V4("240.0.0.0/4"), "a reserved address"),
)
BLOCKED_V6: tuple[tuple[ipaddress.IPv6Network, str], ...] = (
    (_V6("fd00:ec2::254/128"), "the cloud metadata address (IPv6)"),
    (_V6("::/128"), "the unspecified address"),
    (_V6("::1/128"), "the loopback address"),
    (_V6("::/96"), "an IPv4-compatible (deprecated) address"),
    (_V6("64:ff9b:1::/48"), "a local-use NAT64 address"),
    (_V6("100::/64"), "a discard-only address"),
    (_V6("2001::/32"), "a Teredo address"),
    (_V6("2001:2::/48"), "a benchmarking address"),
    (_V6("2001:db8::/32"), "a documentation address"),
    (_V6("3fff::/20"), "a documentation address"),
    (_V6("fc00::/7"), "a unique-local (private) address"),
    (_V6("fe80::/10"), "a link-local address"),
    (_V6("fec0::/10"), "a site-local address"),
    (_V6("ff00::/8"), "a multicast address"),
)
NAT64_WKP = _V6("64:ff9b::/96")


def blocked_reason(ip: IPAddress) -> str | None:
    """Why a client-named URL may not connect to `ip`, or None when it may (a public address)."""
    if isinstance(ip, ipaddress.IPv6Address):
        ip = ipaddress.IPv6Address(ip.packed)  # drop any %scope: the prefix checks ignore it
        embedded: ipaddress.IPv4Address | None = None
        form = ""
        if ip.ipv4_mapped is not None:
            embedded, form = ip.ipv4_mapped, "an IPv4-mapped"
        elif ip.sixtofour is not None:
            embedded, form = ip.sixtofour, "a 6to4"
        elif ip in NAT64_WKP:
            embedded, form = ipaddress.IPv4Address(ip.packed[-4:]), "a NAT64"
        if embedded is not None:
            inner = blocked_reason(embedded)
            return f"{form} form of {embedded}, {inner}" if inner else None
        for net6, why in BLOCKED_V6:
            if ip in net6:
                return why
    else:
        for net4, why in BLOCKED_V4:
            if ip in net4:
                return why
    if ip.is_loopback:
        return "a loopback address"
    if ip.is_private:
        return "a private address"
    if ip.is_link_local:
        return "a link-local address"
    if ip.is_multicast:
        return "a multicast address"
    if ip.is_unspecified:
        return "an unspecified address"
    if ip.is_reserved:
        return "a reserved address"
    if not ip.is_global:
        return "not a public address"
    return None


def sniff_image(data: bytes) -> str | None:
    """The mime type the first bytes announce (PNG, JPEG or WebP signatures), or None."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def _parse_ip(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


class _ConnectFailed(Exception):
    """No connection to one address: the next vetted address of the host is tried."""


@dataclass(frozen=True)
class _Target:
    """One hop, vetted: where to connect and what to tell the server."""

    url: httpx.URL  # the URL with the vetted IP as its host
    host_header: str
    sni: str | None
    address: str


VettedTarget = _Target  # the public name, for callers of ImageFetcher.vet_url

_default_ssl: ssl.SSLContext | None = None
_default_ssl_lock = threading.Lock()


def ssl_context(verify: ssl.SSLContext | bool) -> ssl.SSLContext | bool:
    """What a client of a vetted target verifies with (image fetches, webhook deliveries): `verify` itself
    when it is a context (tests pass one that trusts their own certificate authority) or False; else the
    process's one default verifying context, built on first use (building one loads the CA bundle: ~50 ms)."""
    global _default_ssl
    if verify is not True:
        return verify
    with _default_ssl_lock:
        if _default_ssl is None:
            _default_ssl = httpx.create_ssl_context()
        return _default_ssl


class ImageFetcher:
    """Fetches images named by URL or data URI, safely. Built from settings; cheap to construct."""

    def __init__(
        self,
        settings: Settings,
        *,
        verify: ssl.SSLContext | bool = True,
    ) -> None:
        self.max_bytes = settings.fetch_max_bytes
        self.timeout = settings.fetch_timeout_seconds
        self.max_redirects = settings.fetch_max_redirects
        self.allow_hosts = frozenset(_norm_host(h) for h in settings.fetch_allow_hosts)
        self.verify = verify  # tests pass a context that trusts their own certificate authority

    # -- public --------------------------------------------------------------------------------------

    def fetch(self, url: str, *, field: str) -> bytes:
        """The bytes of the image at `url` (http, https or data URI), or ValidationFailed for `field`."""
        url = url.strip()
        if url[:5].lower() == "data:":
            return self.decode_data_uri(url, field=field)
        if len(url) > MAX_URL_LENGTH:
            raise ValidationFailed.for_field(field, f"URL is longer than {MAX_URL_LENGTH} characters")
        deadline = time.monotonic() + self.timeout
        current = self._parse(url, field)
        for hop in range(self.max_redirects + 1):
            location = self._get_any(self._vet(current, field, deadline), current, field, deadline)
            if isinstance(location, bytes):
                return location
            if hop == self.max_redirects:
                break
            try:
                current = current.join(location)
            except (httpx.InvalidURL, ValueError):
                raise ValidationFailed.for_field(field, "redirect to an invalid URL") from None
            current = self._parse(str(current), field, redirected=True)
        raise ValidationFailed.for_field(field, f"too many redirects (at most {self.max_redirects})")

    def vet_url(self, url: str, *, field: str) -> list[VettedTarget]:
        """Check an http(s) URL by the same rules as a fetch (scheme, userinfo, port, every resolved
        address) and return where to connect, in order; ValidationFailed for `field` otherwise. For
        callers that make their own request (webhooks): connect to `target.url`, send `host_header`."""
        url = url.strip()
        if len(url) > MAX_URL_LENGTH:
            raise ValidationFailed.for_field(field, f"URL is longer than {MAX_URL_LENGTH} characters")
        return self._vet(self._parse(url, field), field, time.monotonic() + self.timeout)

    def decode_data_uri(self, uri: str, *, field: str) -> bytes:
        """`data:image/png;base64,...` decoded locally, with the same size cap and type rules."""
        header, sep, payload = uri[5:].partition(",")
        if not sep:
            raise ValidationFailed.for_field(field, "malformed data URI (no comma)")
        params = [p.strip().lower() for p in header.split(";")]
        mime, is_b64 = params[0], "base64" in params[1:]
        if mime not in ALLOWED_CONTENT_TYPES | GENERIC_CONTENT_TYPES:
            raise ValidationFailed.for_field(
                field, f"data URI type {mime!r} is not allowed; use image/png, image/jpeg or image/webp"
            )
        if is_b64:
            payload = re.sub(r"\s+", "", payload)
            if len(payload) // 4 * 3 > self.max_bytes + 3:
                raise self._too_large(field)
            try:
                data = base64.b64decode(payload, validate=True)
            except (binascii.Error, ValueError):
                raise ValidationFailed.for_field(field, "data URI is not valid base64") from None
        else:
            if len(payload) > 3 * self.max_bytes:
                raise self._too_large(field)
            data = unquote_to_bytes(payload)
        if len(data) > self.max_bytes:
            raise self._too_large(field)
        self._check_sniff(mime, data, field, "data URI")
        return data

    # -- one hop -------------------------------------------------------------------------------------

    def _parse(self, raw: str, field: str, *, redirected: bool = False) -> httpx.URL:
        via = "redirect to " if redirected else ""
        try:
            url = httpx.URL(raw)
        except (httpx.InvalidURL, ValueError, TypeError):
            raise ValidationFailed.for_field(field, f"{via}not a valid URL") from None
        if url.scheme not in DEFAULT_PORTS:
            scheme = url.scheme or "none"
            raise ValidationFailed.for_field(
                field, f"{via}URL scheme {scheme!r} is not allowed; use http, https or a data URI"
            )
        if not url.host:
            raise ValidationFailed.for_field(field, f"{via}URL has no host")
        if url.userinfo:
            raise ValidationFailed.for_field(field, f"{via}URLs with user names or passwords are not allowed")
        return url

    def _vet(self, url: httpx.URL, field: str, deadline: float) -> list[_Target]:
        """Check the port and every address of the host; return where to connect, in order."""
        host = url.host  # httpx: lower-case, IDNA-encoded, IPv6 without brackets
        port = url.port or DEFAULT_PORTS[url.scheme]
        allowed = _norm_host(host) in self.allow_hosts
        literal = _parse_ip(host)
        addresses = [literal] if literal is not None else self._resolve(host, port, field, deadline)
        if not allowed:
            for ip in addresses:
                why = blocked_reason(ip)
                if why:
                    named = str(ip) if literal is not None else f"{host} resolves to {ip}"
                    raise ValidationFailed.for_field(
                        field, f"{named}, which is {why}; only public addresses may be fetched"
                    )
        if not allowed and port not in DEFAULT_PORTS.values():
            raise ValidationFailed.for_field(
                field, f"port {port} is not allowed (only 80 and 443 unless the host is allow-listed)"
            )
        targets = []
        for ip in addresses[:MAX_ADDRESSES_TRIED]:
            ip_host = ip.compressed if isinstance(ip, ipaddress.IPv4Address) else f"[{ip.compressed}]"
            targets.append(
                _Target(
                    url=url.copy_with(netloc=f"{ip_host}:{port}".encode("ascii")),
                    host_header=url.netloc.decode("ascii"),
                    sni=host if url.scheme == "https" and literal is None else None,
                    address=f"{ip_host}:{port}",
                )
            )
        return targets

    def _resolve(self, host: str, port: int, field: str, deadline: float) -> list[IPAddress]:
        """Every address of `host`, bounded by the deadline (getaddrinfo itself has no timeout)."""
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="easel-dns")
        try:
            future = pool.submit(socket.getaddrinfo, host, port, 0, socket.SOCK_STREAM)
            infos = future.result(timeout=max(0.0, deadline - time.monotonic()))
        except concurrent.futures.TimeoutError:
            raise self._timed_out(field) from None
        except (OSError, UnicodeError):
            raise ValidationFailed.for_field(field, f"host {host} could not be resolved") from None
        finally:
            pool.shutdown(wait=False)
        addresses: list[IPAddress] = []
        for family, _type, _proto, _canon, sockaddr in infos:
            ip = _parse_ip(str(sockaddr[0]).split("%", 1)[0])
            if family in (socket.AF_INET, socket.AF_INET6) and ip is not None and ip not in addresses:
                addresses.append(ip)
        if not addresses:
            raise ValidationFailed.for_field(field, f"host {host} has no IPv4 or IPv6 address")
        return addresses

    def _get_any(self, targets: list[_Target], url: httpx.URL, field: str, deadline: float) -> bytes | str:
        """`_get` from the first vetted address that accepts a connection (all of them were checked)."""
        failures = []
        for target in targets:
            try:
                return self._get(target, url, field, deadline)
            except _ConnectFailed as e:
                failures.append(f"{target.address}: {e}")
        raise ValidationFailed.for_field(field, f"could not connect to {url.host} ({'; '.join(failures)})")

    def _get(self, target: _Target, url: httpx.URL, field: str, deadline: float) -> bytes | str:
        """GET one vetted hop: the body (bytes) or a redirect's Location (str)."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise self._timed_out(field)
        extensions = {"sni_hostname": target.sni} if target.sni else {}
        headers = {
            "Host": target.host_header,
            "User-Agent": USER_AGENT,
            "Accept": "image/png, image/jpeg, image/webp",
            "Accept-Encoding": "identity",
        }
        try:
            with (
                httpx.Client(
                    verify=ssl_context(self.verify),
                    trust_env=False,  # never an environment proxy: it would connect elsewhere
                    follow_redirects=False,
                    timeout=httpx.Timeout(remaining),
                    limits=httpx.Limits(max_keepalive_connections=0),
                ) as client,
                client.stream("GET", target.url, headers=headers, extensions=extensions) as resp,
            ):
                if resp.status_code in REDIRECT_STATUSES:
                    location = str(resp.headers.get("location", ""))
                    if not location:
                        raise ValidationFailed.for_field(
                            field, f"HTTP {resp.status_code} redirect without a Location from {url.host}"
                        )
                    return location
                if not 200 <= resp.status_code < 300:
                    raise ValidationFailed.for_field(
                        field, f"the server answered HTTP {resp.status_code} for {_safe_url(url)}"
                    )
                return self._read_body(resp, field, deadline)
        except ValidationFailed:
            raise
        except httpx.TimeoutException:
            raise self._timed_out(field) from None
        except httpx.ConnectError as e:  # refused, unreachable, or the TLS handshake failed
            raise _ConnectFailed(str(e) or type(e).__name__) from None
        except (httpx.HTTPError, httpx.InvalidURL, ssl.SSLError, OSError) as e:
            raise ValidationFailed.for_field(
                field, f"could not fetch {_safe_url(url)}: {type(e).__name__}: {e}"
            ) from None

    def _read_body(self, resp: httpx.Response, field: str, deadline: float) -> bytes:
        ctype = resp.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if ctype not in ALLOWED_CONTENT_TYPES | GENERIC_CONTENT_TYPES:
            raise ValidationFailed.for_field(
                field, f"content type {ctype!r} is not allowed; expected image/png, image/jpeg or image/webp"
            )
        encoding = resp.headers.get("content-encoding", "identity").strip().lower()
        if encoding not in ("", "identity"):
            raise ValidationFailed.for_field(field, f"compressed responses ({encoding}) are not accepted")
        declared = resp.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            raise self._too_large(field)
        chunks: list[bytes] = []
        total = 0
        for chunk in resp.iter_raw():
            total += len(chunk)
            if total > self.max_bytes:
                raise self._too_large(field)
            chunks.append(chunk)
            if time.monotonic() > deadline:
                raise self._timed_out(field)
        data = b"".join(chunks)
        self._check_sniff(ctype, data, field, "response")
        return data

    # -- helpers -------------------------------------------------------------------------------------

    def _check_sniff(self, declared: str, data: bytes, field: str, what: str) -> None:
        if declared in GENERIC_CONTENT_TYPES and sniff_image(data) is None:
            raise ValidationFailed.for_field(
                field, f"the {what} is typed {declared or 'nothing'} and is not a PNG, JPEG or WebP image"
            )

    def _too_large(self, field: str) -> ValidationFailed:
        return ValidationFailed.for_field(field, f"image is larger than {self.max_bytes} bytes")

    def _timed_out(self, field: str) -> ValidationFailed:
        return ValidationFailed.for_field(field, f"fetching the image took longer than {self.timeout:g} s")


def _norm_host(host: str) -> str:
    host = host.strip().lower().rstrip(".")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    ip = _parse_ip(host)
    return ip.compressed if ip is not None else host


def _safe_url(url: httpx.URL) -> str:
    """The URL without its query (which may carry tokens), for messages."""
    return str(url.copy_with(query=None, fragment=None))
