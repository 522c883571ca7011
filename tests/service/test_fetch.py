"""ImageFetcher: the SSRF corpus, redirects, limits and data URIs.

No test here sends a packet anywhere but loopback. The `net` fixture replaces name resolution (made-up
names answer from a table; only IP literals, inet_aton forms and `localhost` reach the real resolver,
which answers those without DNS) and wraps `socket.socket.connect`: every connection attempt is
recorded, and one to a non-loopback address is refused by the spy itself, before any packet is sent.
"""

from __future__ import annotations

import base64
import http.server
import io
import ipaddress
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from PIL import Image

from easel.domain.errors import ValidationFailed
from easel.service.fetch import ImageFetcher, blocked_reason
from easel.settings import Settings

FIELD = "image_url"
PUBLIC = "93.184.216.34"  # a global address: vetted as public, never actually connected to (the spy)


def png_bytes(size: tuple[int, int] = (8, 8)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (10, 200, 30)).save(buf, "PNG")
    return buf.getvalue()


PNG = png_bytes()


# -- the network spy ---------------------------------------------------------------------------------


class Net:
    """Fake DNS for made-up names, and a record of every connection attempt."""

    def __init__(self) -> None:
        self.names: dict[str, list[list[str]]] = {}  # name -> successive answers (the last repeats)
        self.lookups: list[str] = []
        self.connects: list[tuple[str, int]] = []

    def answer(self, name: str, *answers: list[str]) -> None:
        self.names[name] = list(answers)

    def blocked_connects(self, allowed: set[str] | None = None) -> list[tuple[str, int]]:
        """Connection attempts to addresses the fetcher must never reach (not counting `allowed`)."""
        allowed = allowed or set()
        return [
            c
            for c in self.connects
            if c[0] not in allowed and blocked_reason(ipaddress.ip_address(c[0].split("%")[0])) is not None
        ]


@pytest.fixture
def net(monkeypatch: pytest.MonkeyPatch) -> Iterator[Net]:
    state = Net()
    real_getaddrinfo = socket.getaddrinfo
    real_connect = socket.socket.connect

    def fake_getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else str(host)
        state.lookups.append(name)
        key = name.lower().rstrip(".")
        if key in state.names:
            answers = state.names[key]
            ips = answers.pop(0) if len(answers) > 1 else answers[0]
            out = []
            for ip in ips:
                fam = socket.AF_INET6 if ":" in ip else socket.AF_INET
                sockaddr = (ip, int(port or 0), 0, 0) if fam == socket.AF_INET6 else (ip, int(port or 0))
                out.append((fam, socket.SOCK_STREAM, 6, "", sockaddr))
            return out
        numeric = False
        try:
            ipaddress.ip_address(name.split("%")[0])
            numeric = True
        except ValueError:
            try:
                socket.inet_aton(name)  # 127.1, 2130706433, 0x7f000001: answered without DNS
                numeric = True
            except OSError:
                pass
        if numeric:
            return real_getaddrinfo(host, port, *args, **kwargs)
        if key == "localhost":  # /etc/hosts (a trailing dot would go to DNS)
            return real_getaddrinfo("localhost", port, *args, **kwargs)
        raise socket.gaierror(socket.EAI_NONAME, f"test resolver: unknown name {name}")

    def spy_connect(sock: socket.socket, address: Any) -> Any:
        host, port = str(address[0]), int(address[1])
        state.connects.append((host, port))
        if not ipaddress.ip_address(host.split("%")[0]).is_loopback:
            raise ConnectionRefusedError(f"test spy: no connections to {host}")
        return real_connect(sock, address)

    monkeypatch.setattr(socket, "getaddrinfo", fake_getaddrinfo)
    monkeypatch.setattr(socket.socket, "connect", spy_connect)
    yield state


def fetcher(**overrides: Any) -> ImageFetcher:
    verify = overrides.pop("verify", True)
    return ImageFetcher(Settings(**overrides), verify=verify)


def refused(f: ImageFetcher, url: str) -> str:
    with pytest.raises(ValidationFailed) as info:
        f.fetch(url, field=FIELD)
    err = info.value
    assert err.status == 400 and err.code == "validation_error"
    assert [fe.field for fe in err.fields] == [FIELD]
    return err.fields[0].message


# -- a loopback test server --------------------------------------------------------------------------


class Server:
    """An HTTP(S) server on 127.0.0.1 with the behaviours the tests need, by path."""

    def __init__(self, ssl_context: ssl.SSLContext | None = None) -> None:
        self.requests: list[tuple[str, str | None]] = []  # (path, Host header)
        self.sni: list[str | None] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                outer.requests.append((self.path, self.headers.get("Host")))
                parts = urlsplit(self.path)
                q = {k: v[0] for k, v in parse_qs(parts.query).items()}
                route = outer.routes.get(parts.path)
                if route is None:
                    self.reply(404, b"not found", "text/plain")
                else:
                    route(self, q)

            def reply(self, status: int, body: bytes, ctype: str | None, **headers: str) -> None:
                self.send_response(status)
                if ctype is not None:
                    self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                for k, v in headers.items():
                    self.send_header(k.replace("_", "-"), v)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.routes: dict[str, Callable[[Any, dict[str, str]], None]] = {
            "/img.png": lambda h, q: h.reply(200, PNG, "image/png"),
            "/typed.png": lambda h, q: h.reply(200, PNG, q.get("type", "image/png") or None),
            "/html": lambda h, q: h.reply(200, b"<html></html>", "text/html"),
            "/svg": lambda h, q: h.reply(200, b"<svg/>", "image/svg+xml"),
            "/octet-text": lambda h, q: h.reply(200, b"just text", "application/octet-stream"),
            "/gzip": lambda h, q: h.reply(200, PNG, "image/png", Content_Encoding="gzip"),
            "/status": lambda h, q: h.reply(int(q["code"]), b"", "text/plain"),
            "/redirect": lambda h, q: h.reply(int(q.get("code", "302")), b"", None, Location=q["to"]),
            "/redirect-empty": lambda h, q: h.reply(302, b"", None),
            "/chain": self._chain,
            "/loop": lambda h, q: h.reply(302, b"", None, Location="/loop"),
            "/big": self._big,
            "/slow": self._slow,
            "/stall": self._stall,
        }
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        if ssl_context is not None:
            ssl_context.sni_callback = lambda sock, name, ctx: self.sni.append(name)
            self.httpd.socket = ssl_context.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def url(self, path: str, host: str = "127.0.0.1", scheme: str = "http") -> str:
        return f"{scheme}://{host}:{self.port}{path}"

    @staticmethod
    def _chain(h: Any, q: dict[str, str]) -> None:
        n = int(q["n"])
        if n == 0:
            h.reply(200, PNG, "image/png")
        else:
            h.reply(302, b"", None, Location=f"/chain?n={n - 1}")

    @staticmethod
    def _big(h: Any, q: dict[str, str]) -> None:
        size = int(q["size"])
        h.send_response(200)
        h.send_header("Content-Type", "image/png")
        if q.get("length") == "1":
            h.send_header("Content-Length", str(size))
        else:
            h.send_header("Transfer-Encoding", "chunked")
        h.end_headers()
        try:
            sent, chunk = 0, PNG + b"\0" * 65536
            while sent < size:
                part = chunk[: size - sent]
                if q.get("length") == "1":
                    h.wfile.write(part)
                else:
                    h.wfile.write(f"{len(part):x}\r\n".encode() + part + b"\r\n")
                sent += len(part)
            if q.get("length") != "1":
                h.wfile.write(b"0\r\n\r\n")
        except OSError:
            pass  # the client hung up at its cap

    def _slow(self, h: Any, q: dict[str, str]) -> None:
        """Headers at once, then one byte every 0.1 s: each read is quick, the whole is not."""
        h.send_response(200)
        h.send_header("Content-Type", "image/png")
        h.send_header("Content-Length", "100000")
        h.end_headers()
        try:
            for _ in range(100000):
                if self.stop.wait(0.1):
                    return
                h.wfile.write(b"\0")
                h.wfile.flush()
        except OSError:
            pass

    def _stall(self, h: Any, q: dict[str, str]) -> None:
        self.stop.wait(10)  # never answers within the test's deadline

    def close(self) -> None:
        self.stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def server() -> Iterator[Server]:
    s = Server()
    yield s
    s.close()


# -- the SSRF corpus ---------------------------------------------------------------------------------

# Made-up names and what the test resolver answers for them.
FAKE_DNS = {
    "loop.test": ["127.0.0.1"],
    "private.test": ["10.0.0.1"],
    "metadata.test": ["169.254.169.254"],
    "metadata.google.internal": ["169.254.169.254"],
    "v6loop.test": ["::1"],
    "v6mapped.test": ["::ffff:10.1.2.3"],
    "cgnat.test": ["100.64.1.1"],
    "mixed.test": [PUBLIC, "10.0.0.1"],  # one bad answer among good ones refuses the URL
    "mixed6.test": [PUBLIC, "fd00::1"],
    "public.test": [PUBLIC],
}

# (url, a fragment the refusal message must contain)
CORPUS: list[tuple[str, str]] = [
    # IPv4 literals, every blocked class
    ("http://127.0.0.1/a.png", "loopback"),
    ("http://127.255.255.254/", "loopback"),
    ("https://127.0.0.1:443/a.png", "loopback"),
    ("http://0.0.0.0/", "unspecified"),
    ("http://0.1.2.3/", "unspecified"),
    ("http://10.0.0.1/", "private"),
    ("http://172.16.0.1/", "private"),
    ("http://172.31.255.255/", "private"),
    ("http://192.168.1.1/", "private"),
    ("http://100.64.0.1/", "carrier-grade NAT"),
    ("http://100.127.255.254/", "carrier-grade NAT"),
    ("http://169.254.169.254/latest/meta-data/", "cloud metadata"),
    ("http://169.254.1.1/", "link-local"),
    ("http://168.63.129.16/", "Azure"),
    ("http://100.100.100.200/", "Alibaba"),
    ("http://224.0.0.1/", "multicast"),
    ("http://239.255.255.250/", "multicast"),
    ("http://255.255.255.255/", "broadcast"),
    ("http://240.0.0.1/", "reserved"),
    ("http://192.0.2.1/", "documentation"),
    ("http://198.51.100.7/", "documentation"),
    ("http://203.0.113.9/", "documentation"),
    ("http://198.18.0.1/", "benchmarking"),
    ("http://192.0.0.8/", "IETF"),
    ("http://192.88.99.1/", "6to4 relay"),
    # IPv4 in other spellings (the resolver turns them into 127.0.0.1 / 0.0.0.0)
    ("http://127.1/", "127.1 resolves to 127.0.0.1"),
    ("http://2130706433/", "resolves to 127.0.0.1"),
    ("http://0x7f000001/", "resolves to 127.0.0.1"),
    ("http://0/", "resolves to 0.0.0.0"),
    # IPv6 literals
    ("http://[::1]/", "loopback"),
    ("http://[::]/", "unspecified"),
    ("http://[::ffff:127.0.0.1]/", "IPv4-mapped form of 127.0.0.1"),
    ("http://[::ffff:169.254.169.254]/", "IPv4-mapped form of 169.254.169.254, the cloud metadata"),
    ("http://[::ffff:a00:1]/", "IPv4-mapped form of 10.0.0.1"),
    ("http://[::127.0.0.1]/", "IPv4-compatible"),
    ("http://[2002:7f00:1::1]/", "6to4 form of 127.0.0.1"),
    ("http://[2002:a9fe:a9fe::]/", "6to4 form of 169.254.169.254"),
    ("http://[2002:c0a8:101::]/", "6to4 form of 192.168.1.1"),
    ("http://[64:ff9b::7f00:1]/", "NAT64 form of 127.0.0.1"),
    ("http://[64:ff9b::a9fe:a9fe]/", "NAT64 form of 169.254.169.254"),
    ("http://[64:ff9b:1::a00:1]/", "local-use NAT64"),
    ("http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/", "Teredo"),
    ("http://[fec0::1]/", "site-local"),
    ("http://[fc00::1]/", "unique-local"),
    ("http://[fd12:3456:789a::1]/", "unique-local"),
    ("http://[fd00:ec2::254]/", "cloud metadata"),
    ("http://[fe80::1]/", "link-local"),
    ("http://[fe80::1%25eth0]/", "link-local"),
    ("http://[ff02::1]/", "multicast"),
    ("http://[2001:db8::1]/", "documentation"),
    ("http://[100::1]/", "discard"),
    # names that resolve to blocked addresses
    ("http://localhost/", "localhost resolves to 127.0.0.1"),
    ("http://LOCALHOST./a.png", "resolves to 127.0.0.1"),
    ("http://loop.test/", "loop.test resolves to 127.0.0.1"),
    ("http://private.test/", "resolves to 10.0.0.1"),
    ("http://metadata.test/", "169.254.169.254, which is the cloud metadata"),
    ("http://metadata.google.internal/computeMetadata/v1/", "cloud metadata"),
    ("http://v6loop.test/", "resolves to ::1"),
    ("http://v6mapped.test/", "IPv4-mapped form of 10.1.2.3"),
    ("http://cgnat.test/", "carrier-grade NAT"),
    ("http://mixed.test/", "resolves to 10.0.0.1"),
    ("http://mixed6.test/", "resolves to fd00::1"),
    ("https://private.test/a.png", "private"),
    ("http://nowhere.test/", "could not be resolved"),
    # schemes, userinfo, ports, malformed URLs
    ("ftp://example.com/a.png", "scheme 'ftp'"),
    ("file:///etc/passwd", "scheme 'file'"),
    ("gopher://127.0.0.1:70/_x", "scheme 'gopher'"),
    ("dict://127.0.0.1:11211/stats", "scheme 'dict'"),
    ("javascript:alert(1)", "scheme 'javascript'"),
    ("//127.0.0.1/a.png", "scheme 'none'"),
    ("http:///a.png", "no host"),
    ("http://user:pass@public.test/a.png", "user names or passwords"),
    ("http://public.test@127.0.0.1/", "user names or passwords"),
    ("http://public.test:22/", "port 22 is not allowed"),
    ("http://public.test:6379/", "port 6379 is not allowed"),
    ("http://0177.0.0.1/", "not a valid URL"),
    ("http://127.0.0.1\t/", "not a valid URL"),
]


def test_corpus_is_large_and_distinct() -> None:
    urls = [u for u, _ in CORPUS]
    assert len(set(urls)) == len(urls) >= 40


@pytest.mark.parametrize(("url", "why"), CORPUS, ids=[u for u, _ in CORPUS])
def test_ssrf_corpus_refused_without_connecting(net: Net, url: str, why: str) -> None:
    for name, ips in FAKE_DNS.items():
        net.answer(name, ips)
    message = refused(fetcher(), url)
    assert why in message, message
    assert net.connects == []  # refused before any connection: not even to a public address


def test_corpus_refused_even_with_unrelated_allowlist(net: Net) -> None:
    """An allow-list entry covers exactly its host: other names and addresses are still checked."""
    for name, ips in FAKE_DNS.items():
        net.answer(name, ips)
    f = fetcher(fetch_allow_hosts=["images.example.com", "127.0.0.2"])
    for url, _ in CORPUS:
        refused(f, url)
    assert net.connects == []


def test_blocked_reason_table() -> None:
    for ip in ("8.8.8.8", "1.1.1.1", PUBLIC, "2606:4700:4700::1111", "::ffff:8.8.8.8", "2002:808:808::"):
        assert blocked_reason(ipaddress.ip_address(ip)) is None, ip
    for ip in ("127.0.0.1", "10.0.0.1", "::1", "64:ff9b::a00:1", "2001::1", "fd00:ec2::254"):
        assert blocked_reason(ipaddress.ip_address(ip)) is not None, ip


# -- rebinding: the connection goes to the vetted address --------------------------------------------


def test_connects_to_the_vetted_address_not_a_second_answer(net: Net) -> None:
    """First answer public, every later one private: the name is resolved once, and the one connection
    attempt goes to the vetted public address (the spy refuses it, so nothing is sent anywhere)."""
    net.answer("rebind.test", [PUBLIC], ["127.0.0.1"])
    message = refused(fetcher(), "http://rebind.test/a.png")
    assert f"could not connect to rebind.test ({PUBLIC}:80: " in message
    assert net.connects == [(PUBLIC, 80)]
    assert net.lookups.count("rebind.test") == 1


def test_rebinding_name_served_by_its_vetted_address(net: Net, server: Server) -> None:
    """An allow-listed name whose later answers point elsewhere: the request still reaches the address
    resolved first, with the original Host header."""
    net.answer("images.test", ["127.0.0.1"], ["10.0.0.1"])
    f = fetcher(fetch_allow_hosts=["images.test"])
    assert f.fetch(server.url("/img.png", host="images.test"), field=FIELD) == PNG
    assert net.connects == [("127.0.0.1", server.port)]
    assert net.lookups.count("images.test") == 1
    assert server.requests == [("/img.png", f"images.test:{server.port}")]


def test_next_vetted_address_tried_when_one_refuses(net: Net, server: Server) -> None:
    net.answer("two.test", ["127.0.0.2", "127.0.0.1"])  # nothing listens on 127.0.0.2
    f = fetcher(fetch_allow_hosts=["two.test"])
    assert f.fetch(server.url("/img.png", host="two.test"), field=FIELD) == PNG
    assert net.connects == [("127.0.0.2", server.port), ("127.0.0.1", server.port)]
    net.answer("none.test", ["127.0.0.2", "127.0.0.3"])
    message = refused(fetcher(fetch_allow_hosts=["none.test"]), server.url("/img.png", host="none.test"))
    assert message.startswith(f"could not connect to none.test (127.0.0.2:{server.port}: ")


# -- the allow-listed loopback server ----------------------------------------------------------------


def test_allowlisted_loopback_server_works(net: Net, server: Server) -> None:
    f = fetcher(fetch_allow_hosts=["127.0.0.1"])
    assert f.fetch(server.url("/img.png"), field=FIELD) == PNG
    assert net.connects == [("127.0.0.1", server.port)]


def test_loopback_server_refused_without_the_allowlist(net: Net, server: Server) -> None:
    assert "loopback" in refused(fetcher(), server.url("/img.png"))
    assert net.connects == [] and server.requests == []


def test_allowlist_from_environment(net: Net, server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EASEL_FETCH_ALLOW_HOSTS", " cdn.example.com , 127.0.0.1 ")
    settings = Settings()
    assert settings.fetch_allow_hosts == ["cdn.example.com", "127.0.0.1"]
    assert ImageFetcher(settings).fetch(server.url("/img.png"), field=FIELD) == PNG


# -- redirects ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "why"),
    [
        ("http://169.254.169.254/latest/meta-data/", "cloud metadata"),
        ("http://10.0.0.1/a.png", "private"),
        ("http://[::ffff:10.0.0.1]/", "IPv4-mapped"),
        ("http://[fd00:ec2::254]/", "cloud metadata"),
        ("http://localhost:{port}/img.png", "localhost resolves to 127.0.0.1"),
        ("http://[::1]:{port}/img.png", "loopback"),
        ("http://loop.test:{port}/img.png", "loop.test resolves to 127.0.0.1"),
        ("http://private.test/", "private"),
        ("ftp://127.0.0.1/a.png", "scheme 'ftp'"),
        ("file:///etc/passwd", "scheme 'file'"),
        ("http://user:pw@127.0.0.1:{port}/img.png", "user names or passwords"),
    ],
)
@pytest.mark.parametrize("code", [301, 302, 303, 307, 308])
def test_redirect_to_blocked_target_refused_and_not_connected(
    net: Net, server: Server, target: str, why: str, code: int
) -> None:
    net.answer("loop.test", ["127.0.0.1"])
    net.answer("private.test", ["10.0.0.1"])
    f = fetcher(fetch_allow_hosts=["127.0.0.1"])
    to = target.format(port=server.port)
    message = refused(f, server.url(f"/redirect?code={code}&to={to}"))
    assert why in message, message
    # One connection: to the allow-listed server, for the first hop. None to the redirect's target.
    assert net.connects == [("127.0.0.1", server.port)]
    assert net.blocked_connects(allowed={"127.0.0.1"}) == []
    assert [p for p, _ in server.requests] == [f"/redirect?code={code}&to={to}"]


def test_redirect_chain_of_five_is_followed(net: Net, server: Server) -> None:
    f = fetcher(fetch_allow_hosts=["127.0.0.1"])
    assert f.fetch(server.url("/chain?n=5"), field=FIELD) == PNG
    assert len(net.connects) == 6


def test_six_redirects_refused(net: Net, server: Server) -> None:
    f = fetcher(fetch_allow_hosts=["127.0.0.1"])
    assert "too many redirects (at most 5)" in refused(f, server.url("/chain?n=6"))
    assert len(server.requests) == 6  # the sixth Location is never requested


def test_redirect_loop_refused(net: Net, server: Server) -> None:
    f = fetcher(fetch_allow_hosts=["127.0.0.1"])
    assert "too many redirects" in refused(f, server.url("/loop"))
    assert len(server.requests) == 6


def test_redirect_limit_setting(net: Net, server: Server) -> None:
    f = fetcher(fetch_allow_hosts=["127.0.0.1"], fetch_max_redirects=0)
    assert "too many redirects (at most 0)" in refused(f, server.url("/chain?n=1"))
    assert fetcher(fetch_allow_hosts=["127.0.0.1"], fetch_max_redirects=0).fetch(
        server.url("/chain?n=0"), field=FIELD
    )


def test_relative_redirect_followed(net: Net, server: Server) -> None:
    f = fetcher(fetch_allow_hosts=["127.0.0.1"])
    assert f.fetch(server.url("/redirect?to=/img.png"), field=FIELD) == PNG


def test_redirect_without_location_refused(net: Net, server: Server) -> None:
    f = fetcher(fetch_allow_hosts=["127.0.0.1"])
    assert "without a Location" in refused(f, server.url("/redirect-empty"))


# -- limits and content ------------------------------------------------------------------------------


@pytest.mark.parametrize("length", ["1", "0"], ids=["content-length", "chunked"])
def test_size_cap(net: Net, server: Server, length: str) -> None:
    f = fetcher(fetch_allow_hosts=["127.0.0.1"], fetch_max_bytes=100_000)
    message = refused(f, server.url(f"/big?size=5000000&length={length}"))
    assert "larger than 100000 bytes" in message
    # at the cap exactly: accepted by the fetcher (the decoder judges the bytes later)
    assert len(f.fetch(server.url(f"/big?size=100000&length={length}"), field=FIELD)) == 100_000


def test_total_deadline_on_a_slow_drip(net: Net, server: Server) -> None:
    f = fetcher(fetch_allow_hosts=["127.0.0.1"], fetch_timeout_seconds=0.6)
    start = time.monotonic()
    assert "took longer than 0.6 s" in refused(f, server.url("/slow"))
    assert time.monotonic() - start < 5  # bounded test time (the deadline itself is 0.6 s)


def test_deadline_when_the_server_never_answers(net: Net, server: Server) -> None:
    f = fetcher(fetch_allow_hosts=["127.0.0.1"], fetch_timeout_seconds=0.3)
    assert "took longer than 0.3 s" in refused(f, server.url("/stall"))


def test_deadline_covers_dns(monkeypatch: pytest.MonkeyPatch) -> None:
    def slow_dns(*args: Any, **kwargs: Any) -> Any:
        time.sleep(1.0)
        raise socket.gaierror("slow")

    monkeypatch.setattr(socket, "getaddrinfo", slow_dns)
    assert "took longer than 0.2 s" in refused(fetcher(fetch_timeout_seconds=0.2), "http://slow-dns.test/")


@pytest.mark.parametrize(
    ("path", "why"),
    [
        ("/html", "content type 'text/html' is not allowed"),
        ("/svg", "content type 'image/svg+xml' is not allowed"),
        ("/typed.png?type=image/gif", "content type 'image/gif' is not allowed"),
        ("/octet-text", "not a PNG, JPEG or WebP image"),
        ("/gzip", "compressed responses (gzip)"),
        ("/status?code=404", "HTTP 404"),
        ("/status?code=500", "HTTP 500"),
        ("/status?code=304", "HTTP 304"),
    ],
)
def test_content_and_status_refusals(net: Net, server: Server, path: str, why: str) -> None:
    f = fetcher(fetch_allow_hosts=["127.0.0.1"])
    assert why in refused(f, server.url(path))


@pytest.mark.parametrize(
    "ctype", ["image/png", "image/jpeg", "IMAGE/PNG; charset=binary", "application/octet-stream", ""]
)
def test_content_types_accepted(net: Net, server: Server, ctype: str) -> None:
    """Allowed image types pass as declared (the decoder checks the bytes); generic types must sniff."""
    f = fetcher(fetch_allow_hosts=["127.0.0.1"])
    assert f.fetch(server.url(f"/typed.png?type={ctype}"), field=FIELD) == PNG


def test_query_not_echoed_in_messages(net: Net, server: Server) -> None:
    f = fetcher(fetch_allow_hosts=["127.0.0.1"])
    assert "secret" not in refused(f, server.url("/status?code=403&token=secret"))


# -- https: SNI and certificate name are the URL's host, the connection is the vetted address --------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed")
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=images.test",
         "-addext", "subjectAltName=DNS:images.test", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


@pytest.fixture
def tls_server(certificate: tuple[Path, Path]) -> Iterator[Server]:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(*certificate)
    s = Server(ctx)
    yield s
    s.close()


def test_https_uses_the_host_name_for_sni_and_verification(
    net: Net, tls_server: Server, certificate: tuple[Path, Path]
) -> None:
    net.answer("images.test", ["127.0.0.1"])
    trust = ssl.create_default_context(cafile=str(certificate[0]))
    f = fetcher(fetch_allow_hosts=["images.test"], verify=trust)
    assert f.fetch(tls_server.url("/img.png", host="images.test", scheme="https"), field=FIELD) == PNG
    assert tls_server.sni == ["images.test"]
    assert net.connects == [("127.0.0.1", tls_server.port)]
    assert tls_server.requests == [("/img.png", f"images.test:{tls_server.port}")]


def test_https_certificate_still_verified(
    net: Net, tls_server: Server, certificate: tuple[Path, Path]
) -> None:
    net.answer("other.test", ["127.0.0.1"])
    trust = ssl.create_default_context(cafile=str(certificate[0]))
    f = fetcher(fetch_allow_hosts=["other.test", "127.0.0.1"], verify=trust)
    for host in ("other.test", "127.0.0.1"):  # the certificate names images.test only
        message = refused(f, tls_server.url("/img.png", host=host, scheme="https"))
        assert "could not connect" in message and "CERTIFICATE_VERIFY_FAILED" in message
    # and with the default trust store, the self-signed certificate is refused
    net.answer("images.test", ["127.0.0.1"])
    g = fetcher(fetch_allow_hosts=["images.test"])
    message = refused(g, tls_server.url("/img.png", host="images.test", scheme="https"))
    assert "CERTIFICATE_VERIFY_FAILED" in message


# -- data URIs ---------------------------------------------------------------------------------------


def data_uri(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def test_data_uri_decoded_without_network(net: Net) -> None:
    f = fetcher()
    assert f.fetch(data_uri(PNG), field=FIELD) == PNG
    assert f.fetch(data_uri(PNG, "application/octet-stream"), field=FIELD) == PNG
    assert f.fetch("DATA:image/PNG;BASE64," + base64.b64encode(PNG).decode(), field=FIELD) == PNG
    wrapped = base64.encodebytes(PNG).decode()  # with newlines
    assert f.fetch(f"data:image/png;base64,{wrapped}", field=FIELD) == PNG
    assert net.lookups == [] and net.connects == []


@pytest.mark.parametrize(
    ("uri", "why"),
    [
        ("data:text/html;base64,PGh0bWw+", "data URI type 'text/html' is not allowed"),
        ("data:image/svg+xml;base64,PHN2Zy8+", "data URI type 'image/svg+xml'"),
        ("data:image/png;base64", "malformed data URI"),
        ("data:image/png;base64,!!!not base64!!!", "not valid base64"),
        ("data:image/png;base64,aGVsbG8=x", "not valid base64"),
        ("data:application/octet-stream;base64,aGVsbG8=", "not a PNG, JPEG or WebP image"),
    ],
)
def test_data_uri_refusals(net: Net, uri: str, why: str) -> None:
    assert why in refused(fetcher(), uri)
    assert net.connects == []


def test_data_uri_size_cap(net: Net) -> None:
    f = fetcher(fetch_max_bytes=1000)
    assert "larger than 1000 bytes" in refused(f, data_uri(PNG + b"\0" * 2000))
    assert f.fetch(data_uri(PNG), field=FIELD) == PNG
    huge = "data:image/png;base64," + "A" * 10_000_000  # refused on its length, before decoding
    assert "larger than 1000 bytes" in refused(f, huge)


def test_overlong_url_refused(net: Net) -> None:
    assert "longer than" in refused(fetcher(), "http://public.test/" + "a" * 9000)


# -- the service method ------------------------------------------------------------------------------


def test_import_image_url(net: Net, server: Server, runtime: Any) -> None:
    from easel.service.library import LibraryService

    service: LibraryService = runtime.services.library
    service.fetcher = fetcher(fetch_allow_hosts=["127.0.0.1"])
    project = runtime.default_project_id
    img = service.import_url(project, server.url("/img.png"), field="init_image", folder="in")
    assert (img.width, img.height, img.mime) == (8, 8, "image/png")
    assert Image.open(io.BytesIO(service.data(img))).size == (8, 8)
    img2 = service.import_url(project, data_uri(PNG), field="init_image")
    assert img2.id != img.id
    with pytest.raises(ValidationFailed) as info:
        service.import_url(project, "http://10.0.0.1/x.png", field="init_image")
    assert info.value.fields[0].field == "init_image"
    with pytest.raises(ValidationFailed) as info:  # fetched, but not an image: the decoder refuses it
        service.import_url(project, data_uri(b"\x89PNG\r\n\x1a\nnot really"), field="init_image")
    assert info.value.fields[0].field == "init_image"
    assert net.blocked_connects(allowed={"127.0.0.1"}) == []
