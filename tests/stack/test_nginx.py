"""The rendered Nginx config, run for real by Debian's nginx in front of a small echo backend (tests/stack/echo_backend.py).

The backend stands where the auto-start proxy sits, so the tests see exactly what Nginx forwards.
The limits are lowered (1 MiB uploads, 3 s read timeout) so the edges can be crossed quickly.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import websockets

from autostart.app import IDLE_CONNECTION_GRACE_SECONDS
from scripts.stack.nginx_config import (
    NginxConfig,
    NginxConfigError,
    Site,
    error_bodies,
    site_files,
    worker_files_dir,
    write_local_tree,
)
from scripts.stack.nginx_process import check_config
from scripts.stack.tls import ensure_self_signed
from tests.stack.harness import (
    HOSTNAMES,
    PORTAL_ORIGIN,
    LoopbackTransport,
    NginxStack,
    require_nginx,
    running_nginx,
)
from tests.support import free_port, python_module, require, server_process

pytestmark = pytest.mark.stack

LIMIT_BYTES = 1024 * 1024


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NginxStack]:
    require_nginx()
    backend_port = free_port()
    with server_process(
        python_module("tests.stack.echo_backend", str(backend_port)),
        health_url=f"http://127.0.0.1:{backend_port}/health",
        timeout=30,
        log_name="stack-echo-backend",
    ):
        with running_nginx(
            tmp_path_factory.mktemp("nginx-stack"), backend_port, max_body_size="1M", read_timeout_s=3
        ) as running:
            yield running


@pytest.fixture(scope="module")
def client(stack: NginxStack) -> Iterator[httpx.Client]:
    with stack.client() as authenticated:
        yield authenticated


def test_tls_handshake_verifies_against_the_generated_certificate(stack: NginxStack) -> None:
    context = stack.ssl_context()
    context.set_alpn_protocols(["h2", "http/1.1"])
    for hostname in HOSTNAMES:
        with socket.create_connection(("127.0.0.1", stack.https_port), timeout=5) as raw:
            with context.wrap_socket(raw, server_hostname=hostname) as tls:
                assert tls.version() in {"TLSv1.2", "TLSv1.3"}
                assert tls.selected_alpn_protocol() == "h2"
                names = [value for kind, value in tls.getpeercert()["subjectAltName"] if kind == "DNS"]
                assert hostname in names


def test_tls_handshake_fails_without_trusting_the_certificate(stack: NginxStack) -> None:
    with socket.create_connection(("127.0.0.1", stack.https_port), timeout=5) as raw:
        with pytest.raises(ssl.SSLCertVerificationError):
            ssl.create_default_context().wrap_socket(raw, server_hostname=HOSTNAMES[0])


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated")
def test_tls_below_1_2_is_refused(stack: NginxStack) -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.maximum_version = ssl.TLSVersion.TLSv1_1
    context.set_ciphers("ALL:@SECLEVEL=0")
    with socket.create_connection(("127.0.0.1", stack.https_port), timeout=5) as raw:
        with pytest.raises(ssl.SSLError):
            context.wrap_socket(raw, server_hostname=HOSTNAMES[0])


def test_http_redirects_to_https_keeping_host_path_and_query(stack: NginxStack) -> None:
    with httpx.Client(transport=_plain_loopback(), follow_redirects=False) as plain:
        response = plain.post(stack.http_url("/v1/audio/transcriptions?x=1", host=HOSTNAMES[1]))
    assert response.status_code == 301
    assert response.headers["location"] == stack.url("/v1/audio/transcriptions?x=1", host=HOSTNAMES[1])


def test_acme_challenge_is_served_over_http_without_auth(stack: NginxStack) -> None:
    challenge = stack.worker_files / "acme" / ".well-known" / "acme-challenge"
    challenge.mkdir(parents=True, exist_ok=True)
    (challenge / "token123").write_text("token123.key-authorization")
    with httpx.Client(transport=_plain_loopback()) as plain:
        response = plain.get(stack.http_url("/.well-known/acme-challenge/token123"))
    assert response.status_code == 200
    assert response.text == "token123.key-authorization"


def test_no_credentials_gets_401_json_with_a_basic_challenge(stack: NginxStack) -> None:
    with stack.client(auth=False) as anonymous:
        response = anonymous.get(stack.url("/v1/models"))
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Basic realm="Whisper"'
    assert response.headers["content-type"] == "application/json"
    assert response.json() == error_bodies(_any_config())[401]


def test_wrong_credentials_get_401(stack: NginxStack) -> None:
    for user, password in [(stack.credentials.user, "not-the-password"), ("someone", stack.credentials.password)]:
        with stack.client(auth=False) as anonymous:
            response = anonymous.get(stack.url("/v1/models"), auth=(user, password))
        assert response.status_code == 401, (user, response.text)
        assert response.json()["error"]["code"] == "unauthorized"


def test_right_credentials_reach_the_upstream_with_host_and_forwarding_headers(
    stack: NginxStack, client: httpx.Client
) -> None:
    for hostname in HOSTNAMES:
        response = client.get(stack.url("/v1/models?limit=2", host=hostname), headers={"X-Request-ID": "req-abc"})
        assert response.status_code == 200
        seen = response.json()
        assert seen["path"] == "/v1/models?limit=2"
        assert seen["headers"]["Host"] == hostname
        assert seen["headers"]["X-Forwarded-Proto"] == "https"
        assert seen["headers"]["X-Forwarded-For"] == "127.0.0.1"
        assert seen["headers"]["X-Request-ID"] == "req-abc"
        assert response.headers["x-request-id"] == "req-abc"
        assert "Authorization" not in seen["headers"]  # the site password stops at Nginx


def test_an_idle_upstream_connection_is_closed_by_nginx_before_a_stopping_proxy_would(
    stack: NginxStack, client: httpx.Client
) -> None:
    """A proxy that stops leaves its idle connections open for IDLE_CONNECTION_GRACE_SECONDS, for Nginx to close them
    (closing one under the request Nginx is sending on it would fail that request): Nginx must close an idle upstream
    connection sooner than that. Seen from the backend, as the connection the next request arrives on."""
    url = stack.url("/v1/models")
    first = client.get(url).json()["peer"]
    assert client.get(url).json()["peer"] == first, "the upstream connection is not kept alive"
    time.sleep(IDLE_CONNECTION_GRACE_SECONDS - 0.5)
    assert client.get(url).json()["peer"] != first, "Nginx kept an idle upstream connection past the proxy's grace"


def test_request_id_is_made_when_the_client_sends_none(stack: NginxStack, client: httpx.Client) -> None:
    response = client.get(stack.url("/anything"))
    assert len(response.headers["x-request-id"]) == 32
    assert response.json()["headers"]["X-Request-ID"] == response.headers["x-request-id"]


def test_upload_just_under_the_limit_passes(stack: NginxStack, client: httpx.Client) -> None:
    response = client.post(stack.url("/v1/audio/transcriptions"), content=b"\0" * (LIMIT_BYTES - 1))
    assert response.status_code == 200
    assert response.json()["body_bytes"] == LIMIT_BYTES - 1


def test_upload_over_the_limit_gets_413_json(stack: NginxStack, client: httpx.Client) -> None:
    response = client.post(stack.url("/v1/audio/transcriptions"), content=b"\0" * (LIMIT_BYTES + 1))
    assert response.status_code == 413
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["error"]["code"] == "request_too_large"
    assert "1 MiB at most" in body["error"]["message"]


def test_streamed_upload_over_the_limit_gets_413(stack: NginxStack, client: httpx.Client) -> None:
    def chunks() -> Iterator[bytes]:  # no Content-Length: nginx counts as the body streams
        for _ in range(20):
            yield b"\0" * 65536

    response = client.post(stack.url("/upload"), content=chunks())
    assert response.status_code == 413


def test_multipart_upload_streams_through(stack: NginxStack, client: httpx.Client) -> None:
    audio = b"RIFF" + b"\1" * 500_000
    response = client.post(stack.url("/v1/audio/transcriptions"), files={"file": ("a.wav", audio)}, data={"x": "1"})
    assert response.status_code == 200
    assert response.json()["body_bytes"] > len(audio)


def test_server_header_leaks_no_version(stack: NginxStack, client: httpx.Client) -> None:
    with stack.client(auth=False) as anonymous:
        responses = [client.get(stack.url("/x")), anonymous.get(stack.url("/x"))]
    with httpx.Client(transport=_plain_loopback()) as plain:
        responses.append(plain.get(stack.http_url("/x")))
    for response in responses:
        assert response.headers["server"] == "nginx"
        assert "nginx/" not in response.text


def test_security_headers_on_answers_and_error_pages(stack: NginxStack, client: httpx.Client) -> None:
    with stack.client(auth=False) as anonymous:
        responses = [
            client.get(stack.url("/x")),
            anonymous.get(stack.url("/x")),
            client.post(stack.url("/x"), content=b"\0" * (LIMIT_BYTES + 1)),
        ]
    for response in responses:
        assert response.headers["strict-transport-security"].startswith("max-age=63072000")
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["referrer-policy"] == "no-referrer"


def test_cors_preflight_from_the_portal_is_allowed_without_credentials(stack: NginxStack) -> None:
    with stack.client(auth=False) as anonymous:
        response = anonymous.options(
            stack.url("/v1/audio/transcriptions"),
            headers={
                "Origin": PORTAL_ORIGIN,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization,content-type",
            },
        )
    assert response.status_code == 204
    assert response.headers["access-control-allow-origin"] == PORTAL_ORIGIN
    assert "POST" in response.headers["access-control-allow-methods"]
    assert "Authorization" in response.headers["access-control-allow-headers"]
    assert response.headers["access-control-allow-credentials"] == "true"


def test_cors_from_another_origin_is_not_allowed(stack: NginxStack, client: httpx.Client) -> None:
    with stack.client(auth=False) as anonymous:
        preflight = anonymous.options(
            stack.url("/v1/audio/transcriptions"),
            headers={"Origin": "https://evil.example.com", "Access-Control-Request-Method": "POST"},
        )
    simple = client.get(stack.url("/v1/models"), headers={"Origin": "https://evil.example.com"})
    for response in (preflight, simple):
        assert "access-control-allow-origin" not in response.headers
        assert "access-control-allow-credentials" not in response.headers
    allowed = client.get(stack.url("/v1/models"), headers={"Origin": PORTAL_ORIGIN})
    assert allowed.headers["access-control-allow-origin"] == PORTAL_ORIGIN


def test_options_never_reaches_the_upstream_without_credentials(stack: NginxStack) -> None:
    with stack.client(auth=False) as anonymous:
        response = anonymous.options(stack.url("/v1/models"))
    assert response.status_code == 204
    assert response.content == b""


def test_server_sent_events_are_not_buffered(stack: NginxStack, client: httpx.Client) -> None:
    started = time.monotonic()
    arrivals = []
    with client.stream("GET", stack.url("/events")) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("data:"):
                arrivals.append(time.monotonic() - started)
    assert len(arrivals) == 3
    # The backend pauses 1 s between events: buffered, all three would arrive together after ~3 s.
    assert arrivals[0] < 0.9, arrivals
    assert arrivals[2] - arrivals[0] > 1.5, arrivals


def test_the_edge_user_header_is_the_checked_user_whatever_the_client_sends(
    stack: NginxStack, client: httpx.Client
) -> None:
    spoofed = {"X-Whisper-User": "boss", "X-Whisper-Edge-Auth": "basic", "x-whisper-user": "boss"}
    seen = client.get(stack.url("/v1/jobs"), headers=spoofed).json()["headers"]
    assert seen["X-Whisper-User"] == stack.credentials.user and seen["X-Whisper-Edge-Auth"] == "basic"


def test_an_api_key_passes_without_basic_auth_marked_for_the_service_to_check(stack: NginxStack) -> None:
    with stack.client(auth=False) as anonymous:
        seen = anonymous.get(
            stack.url("/v1/jobs"), headers={"Authorization": "Bearer wsk_some-key", "X-Whisper-User": "boss"}
        ).json()["headers"]
        assert seen["Authorization"] == "Bearer wsk_some-key" and seen["X-Whisper-Edge-Auth"] == "api-key"
        assert "X-Whisper-User" not in seen  # never the client's, and no edge user on the key path
        for empty in ("Bearer", "Token abc", "Basic Zm9vOmJhcg=="):  # no key: basic auth, as before
            response = anonymous.get(stack.url("/v1/jobs"), headers={"Authorization": empty})
            assert response.status_code == 401 and response.json()["error"]["code"] == "unauthorized", empty


def test_a_browser_key_subprotocol_passes_the_websocket_without_basic_auth(stack: NginxStack) -> None:
    async def talk(subprotocols: list[str]) -> str:
        async with websockets.connect(
            f"wss://{HOSTNAMES[0]}:{stack.https_port}/ws", ssl=stack.ssl_context(), host="127.0.0.1",
            subprotocols=subprotocols,  # type: ignore[arg-type]
        ) as socket_:
            await socket_.send("hello")
            return str(await socket_.recv())

    assert asyncio.run(talk(["realtime", "openai-insecure-api-key.wsk_some-key"])) == "echo: hello"
    with pytest.raises(websockets.exceptions.InvalidStatus) as refused:
        asyncio.run(talk(["realtime"]))
    assert refused.value.response.status_code == 401


def test_websocket_upgrade_is_forwarded(stack: NginxStack) -> None:
    token = base64.b64encode(f"{stack.credentials.user}:{stack.credentials.password}".encode()).decode()

    async def talk() -> str:
        async with websockets.connect(
            f"wss://{HOSTNAMES[0]}:{stack.https_port}/ws",
            ssl=stack.ssl_context(),
            host="127.0.0.1",  # the name may not resolve here; Host and SNI still say whisper.localhost
            additional_headers={"Authorization": f"Basic {token}"},
        ) as socket_:
            await socket_.send("hello")
            return str(await socket_.recv())

    assert asyncio.run(talk()) == "echo: hello"


def test_proxy_status_pages_are_not_served_on_the_sites(stack: NginxStack, client: httpx.Client) -> None:
    for path in ("/_autostart/status", "/_autostart/metrics"):
        response = client.get(stack.url(path))
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "not_found"


def test_upstream_failure_gets_502_json(stack: NginxStack, client: httpx.Client) -> None:
    response = client.get(stack.url("/drop"))
    assert response.status_code == 502
    assert response.headers["content-type"] == "application/json"
    assert response.json() == error_bodies(_any_config())[502]


def test_upstream_too_slow_gets_504_json(stack: NginxStack, client: httpx.Client) -> None:
    response = client.get(stack.url("/slow?seconds=6"))
    assert response.status_code == 504
    body = response.json()
    assert body["error"]["code"] == "gateway_timeout"
    assert "3 seconds" in body["error"]["message"]


def test_http2_is_spoken(stack: NginxStack) -> None:
    require(shutil.which("curl") is not None, "curl (apt-get install curl)")
    result = subprocess.run(
        [
            "curl", "-sS", "--http2", "--cacert", str(stack.cert), "-u", ":".join(stack.auth),
            "-o", "/dev/null", "-w", "%{http_version} %{http_code}", stack.url("/x"),
        ],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert result.stdout == "2 200", result.stderr


def test_production_render_has_the_production_defaults(tmp_path: Path) -> None:
    config = NginxConfig(
        sites=[Site.letsencrypt("whisper.example.com"), Site.letsencrypt("whisperx.example.com")],
        cors_origins=["https://portal.example.com"],
    )
    files = site_files(config)
    site = files["sites-available/whisper.example.com.conf"]
    assert "ssl_certificate     /etc/letsencrypt/live/whisper.example.com/fullchain.pem;" in site
    assert "ssl_certificate_key /etc/letsencrypt/live/whisper.example.com/privkey.pem;" in site
    assert "listen 443 ssl http2;" in site and "listen [::]:443 ssl http2;" in site
    assert "listen 80;" in site
    assert "access_log /var/log/nginx/whisper.example.com.access.log whisper_json;" in site
    assert site.count("server_tokens off;") == 2
    assert "client_max_body_size 500M;" in site
    assert "proxy_read_timeout 600s;" in site
    assert "proxy_request_buffering off;" in site and "proxy_buffering off;" in site
    assert "include snippets/basic-auth.conf;" in site and "include snippets/tls.conf;" in site
    assert "return 301 https://$host$request_uri;" in site
    assert "server 127.0.0.1:8890;" in files["conf.d/whisper-platform.conf"]
    assert '"https://portal.example.com" $http_origin;' in files["conf.d/whisper-platform.conf"]
    assert "/etc/nginx/whisper.htpasswd" in files["snippets/basic-auth.conf"]
    newer = site_files(NginxConfig(sites=config.sites, nginx_version=(1, 25, 3)))
    assert "listen 443 ssl;" in newer["sites-available/whisper.example.com.conf"]
    assert "http2 on;" in newer["sites-available/whisper.example.com.conf"]


def test_production_render_passes_nginx_t(tmp_path: Path) -> None:
    """The production files, with the certificates swapped for a test pair, pass `nginx -t`."""
    require_nginx()
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    ensure_self_signed(cert, key, ["whisper.example.com"])
    htpasswd = worker_files_dir(tmp_path) / "htpasswd"
    htpasswd.parent.mkdir(parents=True, exist_ok=True)
    htpasswd.write_text("")
    config = NginxConfig(
        sites=[Site("whisper.example.com", cert, key)],
        htpasswd_file=htpasswd,
        http_listen=[f"127.0.0.1:{free_port()}"],
        https_listen=[f"127.0.0.1:{free_port()}"],
    )
    try:
        conf = write_local_tree(config, tmp_path / "nginx", tmp_path)
        assert "syntax is ok" in check_config(conf, tmp_path)
    finally:
        if htpasswd.parent != tmp_path:
            shutil.rmtree(htpasswd.parent)


def test_unsafe_values_are_refused() -> None:
    good = Site("whisper.example.com", Path("/c.pem"), Path("/k.pem"))
    for bad in [
        {"sites": [Site("evil.com; include /etc/passwd", Path("/c"), Path("/k"))]},
        {"sites": [good], "cors_origins": ["*"]},
        {"sites": [good], "cors_origins": ["https://a.com' always; x"]},
        {"sites": [good], "max_body_size": "1G; x"},
        {"sites": [good], "htpasswd_file": Path("/tmp/a b")},
        {"sites": []},
    ]:
        with pytest.raises(NginxConfigError):
            NginxConfig(**bad)


def test_the_json_error_bodies_are_valid_json_in_the_rendered_snippet() -> None:
    snippet = site_files(_any_config())["snippets/json-errors.conf"]
    bodies = error_bodies(_any_config())
    assert {400, 401, 403, 405, 408, 413, 414, 429, 500, 502, 503, 504} <= set(bodies)
    for status, body in bodies.items():
        assert body["error"]["message"] and body["error"]["code"] and body["error"]["type"]
        assert f"return {status} '{json.dumps(body, separators=(',', ':'))}\\n';" in snippet
        assert f"@whisper_{status};" in snippet or f"/_whisper_error_{status};" in snippet
    assert "error_page 400 494 495 496 497 /_whisper_error_400;" in snippet


def test_the_workers_run_as_the_hosts_nginx_user_not_root(stack: NginxStack) -> None:
    # A server's Nginx runs its workers as www-data (Debian): so must every Nginx the tests start as root.
    workers = subprocess.run(["ps", "-o", "user=", "--ppid", _master_pid(stack)], capture_output=True, text=True)
    users = set(workers.stdout.split())
    assert users and "root" not in users, users


def _master_pid(stack: NginxStack) -> str:
    return (stack.run_dir / "nginx.pid").read_text().strip()


def _raw_tls(stack: NginxStack, request: bytes) -> tuple[int, dict]:
    """Sends `request` as it is over TLS and reads the status and the JSON body of the answer."""
    with socket.create_connection(("127.0.0.1", stack.https_port), timeout=10) as raw:
        with stack.ssl_context().wrap_socket(raw, server_hostname=HOSTNAMES[0]) as tls:
            tls.sendall(request)
            data = b""
            while chunk := tls.recv(65536):
                data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert b"content-type: application/json" in head.lower(), head
    return int(head.split(b" ", 2)[1]), json.loads(body)


def test_a_malformed_request_gets_400_json(stack: NginxStack) -> None:
    status, body = _raw_tls(stack, b"GET /v1/models HTTP/1.1\r\nHost: " + HOSTNAMES[0].encode() + b"\r\nBad Header\r\n\r\n")
    assert status == 400 and body["error"]["code"] == "bad_request"


def test_a_too_long_url_gets_414_json(stack: NginxStack, client: httpx.Client) -> None:
    response = client.get(stack.url("/v1/models?" + "q" * 20_000))
    assert response.status_code == 414
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"]["code"] == "uri_too_long"


def test_an_htpasswd_the_workers_cannot_read_is_a_500_json_not_html(stack: NginxStack, client: httpx.Client) -> None:
    # What a server got when `make up` wrote the file 0600 root:root: Nginx's own 500. It must be JSON.
    htpasswd = stack.worker_files / "htpasswd"
    mode = htpasswd.stat().st_mode & 0o777
    htpasswd.chmod(0o600 if os.geteuid() == 0 else 0o000)
    try:
        response = client.get(stack.url("/v1/models"))
    finally:
        htpasswd.chmod(mode)
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/json"
    assert response.json() == error_bodies(_any_config())[500]
    assert client.get(stack.url("/v1/models")).status_code == 200  # readable again: served again


# -- the per-address rate limit ---------------------------------------------------------------------------------

GUESSER, USER = "127.0.0.2", "127.0.0.3"  # two clients, told apart by their loopback source address


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NginxStack]:
    """The stack with a low limit (2 requests a second, 5 at once), so that a test can cross it quickly."""
    require_nginx()
    backend_port = free_port()
    with server_process(
        python_module("tests.stack.echo_backend", str(backend_port)),
        health_url=f"http://127.0.0.1:{backend_port}/health",
        timeout=30,
        log_name="stack-echo-backend-limited",
    ):
        with running_nginx(tmp_path_factory.mktemp("nginx-limited"), backend_port, rate_limit=2,
                           rate_limit_burst=5) as running:
            yield running


def test_a_burst_of_wrong_passwords_gets_429_while_another_client_is_served(limited: NginxStack) -> None:
    user, password = limited.auth
    statuses: list[int] = []
    served: list[int] = []
    with limited.client(auth=(user, "wrong-guess"), source=GUESSER) as guesser, \
            limited.client(source=USER) as honest:
        for attempt in range(30):
            answer = guesser.get(limited.url(f"/guess/{attempt}"))
            statuses.append(answer.status_code)
            if answer.status_code == 429:
                assert answer.json() == error_bodies(_limited_config())[429]
                assert answer.headers["Retry-After"] == "1"
                assert answer.headers["X-Content-Type-Options"] == "nosniff"
            if attempt % 10 == 0:
                served.append(honest.get(limited.url("/work")).status_code)
        # Limited, the guesser's right password is refused too, before it is checked: guessing learns nothing.
        assert guesser.get(limited.url("/x"), auth=(user, password)).status_code == 429
    assert statuses[:6].count(401) >= 5, statuses  # the burst passes to the password check, and fails there
    assert statuses.count(429) >= 20, statuses
    assert set(statuses) <= {401, 429}
    assert served == [200, 200, 200]
    # The access log names the address of each refusal (what fail2ban reads).
    log = (limited.run_dir / "logs" / "whisper.localhost.access.log").read_text().splitlines()
    refused = [json.loads(line) for line in log if '"status":429' in line]
    assert refused and {entry["remote_addr"] for entry in refused} == {GUESSER}


def test_the_limit_refills_and_cors_preflights_are_not_counted(limited: NginxStack) -> None:
    with limited.client(source="127.0.0.4") as client:
        for _ in range(12):  # preflights: answered by nginx without a password check, never limited
            preflight = client.options(limited.url("/v1/audio/transcriptions"),
                                       headers={"Origin": PORTAL_ORIGIN, "Access-Control-Request-Method": "POST"})
            assert preflight.status_code == 204
        statuses = [client.get(limited.url("/x")).status_code for _ in range(8)]
        assert statuses[:5] == [200] * 5 and 429 in statuses, statuses
        time.sleep(1.1)  # one request leaks out of the bucket every 1/rate = 0.5 s
        assert client.get(limited.url("/x")).status_code == 200


def test_rate_limit_renders_as_settings_and_can_be_turned_off() -> None:
    files = site_files(NginxConfig(sites=[Site("whisper.example.com", Path("/c.pem"), Path("/k.pem"))],
                                   rate_limit=25, rate_limit_burst=100))
    assert "rate=25r/s;" in files["conf.d/whisper-platform.conf"]
    assert "limit_req zone=whisper_per_address burst=100 nodelay;" in files["sites-available/whisper.example.com.conf"]
    off = site_files(NginxConfig(sites=[Site("whisper.example.com", Path("/c.pem"), Path("/k.pem"))], rate_limit=0))
    assert "limit_req_zone" not in off["conf.d/whisper-platform.conf"].replace("# no per-address", "")
    assert "limit_req zone" not in off["sites-available/whisper.example.com.conf"]
    with pytest.raises(NginxConfigError):
        NginxConfig(sites=[Site("whisper.example.com", Path("/c.pem"), Path("/k.pem"))], rate_limit=-1)


def _limited_config() -> NginxConfig:
    return NginxConfig(sites=[Site("whisper.localhost", Path("/c.pem"), Path("/k.pem"))], rate_limit=2,
                       rate_limit_burst=5)


def _any_config() -> NginxConfig:
    return NginxConfig(
        sites=[Site("whisper.localhost", Path("/c.pem"), Path("/k.pem"))], max_body_size="1M", read_timeout_s=3
    )


def _plain_loopback() -> httpx.HTTPTransport:
    return LoopbackTransport()
