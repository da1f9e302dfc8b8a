"""One forwarding policy: the same request sent down the fast path (a plain GET) and the full path (the same GET with
`Content-Length: 0`, which the fast path hands over) reaches the service with the same headers and gets the same
answer, against a real proxy process and a real backend. The access log says which path took each request, so a
case that silently went down one path twice fails."""
from __future__ import annotations

import json
import socket
from collections.abc import Iterator

import pytest

from autostart.forwarding import HOP_BY_HOP, RequestHeaders, request_id
from tests.support import free_port

from .conftest import ProxyHandle, command_service, log_events, run_proxy, wait_until

pytestmark = pytest.mark.timeout(120)

HOST = "backend.test"
SLOW = "slow.test"
# What makes the full path take a request the fast path would relay: a Content-Length (a body, if empty).
PATHS = {"fast": b"", "full": b"Content-Length: 0\r\n"}


@pytest.fixture(scope="module")
def proxy(tmp_path_factory) -> Iterator[ProxyHandle]:
    config = {
        "services": {
            HOST: command_service(free_port(), idleTimeout=0),
            SLOW: command_service(free_port(), name="slow", idleTimeout=0, requestTimeout=1),
        },
        "checkInterval": 0.3,
        "accessLog": True,
    }
    with run_proxy(config, tmp_path_factory.mktemp("forwarding"), name="forwarding") as handle:
        for host in (HOST, SLOW):
            assert handle.get(host, "/health", timeout=60).status_code == 200
        yield handle


Answer = tuple[int, dict[str, str], bytes]


def exchange(port: int, request: bytes) -> Answer:
    """Send raw bytes, read one response: status, headers (lower-case names; a repeated one fails), body."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            assert name.lower() not in headers, f"{name} sent twice"
            headers[name.lower()] = value.strip()
        while len(body) < int(headers.get("content-length", "0")):
            chunk = sock.recv(65536)
            if not chunk:
                break
            body += chunk
    return int(lines[0].split(" ", 2)[1]), headers, body


def both_paths(proxy: ProxyHandle, target: str, extra: bytes = b"", host: str = HOST) -> dict[str, Answer]:
    """The same GET down the fast path and down the full path."""
    return {path: exchange(proxy.port, f"GET {target} HTTP/1.1\r\nHost: {host}\r\n".encode() + extra + forcing
                           + b"\r\n")
            for path, forcing in PATHS.items()}


def assert_paths_taken(proxy: ProxyHandle, event: str, request_ids: dict[str, str]) -> None:
    """The log lines `event` of these requests say each took the path it was meant to (so a case that went down
    one path twice cannot pass)."""
    def flags() -> list[bool]:
        return sorted(bool(e.get("fastPath")) for e in log_events(proxy)
                      if e.get("event") == event and e.get("requestId") in request_ids.values())

    wait_until(lambda: len(flags()) == 2, 5, f"two '{event}' log lines")
    assert flags() == [False, True]


ID_CASES = {
    "plain": (b"req-123", True),
    "printable-with-space": (b"trace 42/abc:def", True),
    "longest": (b"b" * 128, True),
    "too-long": (b"c" * 129, False),
    "tab": (b"d\te", False),
    "utf-8": ("réq-1".encode(), False),
    "empty": (b"", False),
}


@pytest.mark.parametrize("case", list(ID_CASES))
def test_request_ids_follow_one_rule_on_both_paths(proxy, case):
    given, kept = ID_CASES[case]
    answers = both_paths(proxy, "/echo", b"X-Request-ID: " + given + b"\r\n")
    seen = {}
    for path, (status, _, body) in answers.items():
        assert status == 200
        seen[path] = json.loads(body)["headers"]["x-request-id"]
        if kept:
            assert seen[path] == given.decode(), f"{path} path: {seen[path]!r}"
        else:
            assert len(seen[path]) == 16 and int(seen[path], 16) >= 0, f"{path} path kept {seen[path]!r}"
    assert (seen["fast"] == seen["full"]) == kept
    if not kept:
        assert_paths_taken(proxy, "request", seen)


def test_both_paths_forward_the_same_headers(proxy):
    extra = (b"X-Forwarded-For: 203.0.113.9, 198.51.100.7\r\nConnection: keep-alive, X-Hop\r\n"
             b"X-Hop: secret\r\nKeep-Alive: timeout=5\r\nProxy-Authorization: Basic c2VjcmV0\r\nTE: trailers\r\n"
             b"User-Agent: parity/1.0\r\nAccept: */*\r\n")
    seen = {}
    for path, (status, _, body) in both_paths(proxy, "/echo", extra, host=f"{HOST}:8443").items():
        assert status == 200
        seen[path] = json.loads(body)["headers"]
        seen[path].pop("content-length", None)  # the header that sent it down the full path
    request_ids = {path: headers.pop("x-request-id") for path, headers in seen.items()}
    assert seen["fast"] == seen["full"]
    headers = seen["fast"]
    assert headers["x-forwarded-for"] == "203.0.113.9, 198.51.100.7, 127.0.0.1"
    assert headers["x-forwarded-proto"] == "http" and headers["x-forwarded-host"] == f"{HOST}:8443"
    assert headers["host"] == f"{HOST}:8443" and headers["user-agent"] == "parity/1.0"
    assert not {"x-hop", "keep-alive", "proxy-authorization", "te"} & set(headers)
    assert_paths_taken(proxy, "request", request_ids)


def test_a_reset_is_the_same_502_on_both_paths(proxy):
    answers = {}
    for path, forcing in PATHS.items():
        answers[path] = exchange(proxy.port, f"GET /close HTTP/1.1\r\nHost: {HOST}\r\nX-Request-ID: reset-{path}"
                                             f"\r\n".encode() + forcing + b"\r\n")
        wait_until(lambda: proxy.get(HOST, "/health", timeout=60).status_code == 200, 60, "the backend again")
    assert_paths_taken(proxy, "upstream failed", {"fast": "reset-fast", "full": "reset-full"})
    assert_same_answer(answers, 502, {"error": "backend is unreachable: connection reset by the service",
                                      "service": "backend"})


def test_a_request_past_request_timeout_is_the_same_504_on_both_paths(proxy):
    answers = {path: exchange(proxy.port, f"GET /slow?seconds=5 HTTP/1.1\r\nHost: {SLOW}\r\nX-Request-ID: slow-"
                                          f"{path}\r\n".encode() + forcing + b"\r\n")
               for path, forcing in PATHS.items()}
    assert_paths_taken(proxy, "upstream timed out", {"fast": "slow-fast", "full": "slow-full"})
    assert_same_answer(answers, 504, {"error": "slow did not answer within 1s", "service": "slow"})


def assert_same_answer(answers: dict[str, Answer], status: int, body: dict) -> None:
    for path, (got_status, headers, raw) in answers.items():
        assert got_status == status, f"{path} path: {got_status}"
        assert json.loads(raw) == body, f"{path} path: {raw!r}"
        assert headers["content-type"] == "application/json" and headers["cache-control"] == "no-store", path
        assert headers["connection"] == "close" and "date" in headers, path
    # Date's value is the clock's; Server is stamped by aiohttp on the full path (Nginx hides both).
    fast, full = ({k: v for k, v in answers[p][1].items() if k not in ("date", "server")} for p in ("fast", "full"))
    assert fast == full
    assert answers["fast"][2] == answers["full"][2]


# -- the policy itself, without sockets --------------------------------------------------------------------------


def test_hop_by_hop_and_connection_listed_headers_are_never_forwarded():
    headers = RequestHeaders()
    for name, value in [(b"Host", b"a.test"), (b"Connection", b"close, X-Private"), (b"X-Private", b"1"),
                        (b"Transfer-Encoding", b"chunked"), (b"Expect", b"100-continue"), (b"X-Kept", b"yes")]:
        headers.add(name, value)
    forwarded = dict(headers.forwarded(b"192.0.2.1", b"id-1"))
    assert forwarded == {b"Host": b"a.test", b"X-Kept": b"yes", b"X-Forwarded-For": b"192.0.2.1",
                         b"X-Forwarded-Proto": b"http", b"X-Forwarded-Host": b"a.test", b"X-Request-ID": b"id-1"}
    assert all(name.lower().decode() not in HOP_BY_HOP for name in forwarded)


def test_x_forwarded_for_sent_on_several_lines_is_one_list():
    headers = RequestHeaders()
    for name, value in [(b"Host", b"a.test"), (b"X-Forwarded-For", b"203.0.113.9"),
                        (b"x-forwarded-for", b"198.51.100.7")]:
        headers.add(name, value)
    assert headers.repeated  # the fast path hands such a request to the full path
    assert dict(headers.forwarded(b"127.0.0.1", b"id"))[b"X-Forwarded-For"] == b"203.0.113.9, 198.51.100.7, 127.0.0.1"


def test_a_request_id_is_kept_only_when_it_is_printable_ascii_up_to_128():
    assert request_id(b"abc DEF-123_~") == b"abc DEF-123_~"
    for bad in (None, b"", b"x" * 129, b"a\x00b", b"a\rb", "é".encode(), b"\x7f"):
        replaced = request_id(bad)
        assert replaced != bad and len(replaced) == 16
