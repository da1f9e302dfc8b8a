"""The SSRF rules for `audio_url` and `webhook_url`, and the Standard Webhooks signer against the reference verifier.
Names are resolved for real (literal addresses and `localhost`; no network needed)."""
from __future__ import annotations

import asyncio
import base64
import contextlib
import time
from pathlib import Path

import pytest
import standardwebhooks

from whisper_common.jobs.errors import OutboundRefused, TransientJobError
from whisper_common.jobs.outbound import OutboundPolicy, download, outbound_client
from whisper_common.jobs.signer import Signer


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/x", "http://localhost:8080/x", "http://10.0.0.5/x", "http://172.16.3.4/x",
        "http://192.168.1.1/x", "http://169.254.169.254/latest/meta-data", "http://[::1]/x", "http://[fe80::1]/x",
        "http://[fd00::1]/x", "http://0.0.0.0/x", "http://[::ffff:127.0.0.1]/x", "http://224.0.0.1/x",
    ],
)
async def test_internal_addresses_are_refused(url: str) -> None:
    with pytest.raises(OutboundRefused) as refused:
        await OutboundPolicy().check("webhook_url", url)
    assert refused.value.param == "webhook_url" and "OUTBOUND_ALLOWLIST" in refused.value.message


@pytest.mark.parametrize("url", ["ftp://example.com/a", "file:///etc/passwd", "gopher://x", "not a url", "http://"])
async def test_only_http_urls(url: str) -> None:
    with pytest.raises(OutboundRefused):
        await OutboundPolicy().check("audio_url", url)


async def test_the_allowlist_opens_hosts_and_networks() -> None:
    by_network = await OutboundPolicy(["10.0.0.0/8", "::1"]).check("audio_url", "http://10.2.3.4:9000/a.wav")
    assert by_network.address == "10.2.3.4" and by_network.headers() == {"Host": "10.2.3.4:9000"}
    by_host = await OutboundPolicy(["localhost"]).check("webhook_url", "https://localhost/hook")
    assert by_host.address in ("127.0.0.1", "::1")
    assert by_host.extensions() == {"sni_hostname": "localhost"}  # TLS still checks the name, not the address
    assert by_host.request_url().host == by_host.address
    with pytest.raises(OutboundRefused):
        await OutboundPolicy(["10.0.0.0/8"]).check("audio_url", "http://192.168.0.1/a")


async def test_public_addresses_pass() -> None:
    target = await OutboundPolicy().check("audio_url", "https://93.184.215.14/a.mp3")
    assert target.address == "93.184.215.14"


def test_signatures_verify_with_the_reference_library_for_each_secret() -> None:
    secrets = ["whsec_" + base64.b64encode(bytes([n]) * 32).decode() for n in (1, 2)]
    body = b'{"type":"job.succeeded","data":{"id":"job_1"}}'
    headers = Signer(secrets).headers("msg_1", int(time.time()), body)
    for secret in secrets:
        assert standardwebhooks.Webhook(secret).verify(body, headers) == {"type": "job.succeeded", "data": {"id": "job_1"}}
    other = "whsec_" + base64.b64encode(b"\x03" * 32).decode()
    with pytest.raises(standardwebhooks.WebhookVerificationError):
        standardwebhooks.Webhook(other).verify(body, headers)
    assert "webhook-signature" not in Signer([]).headers("msg_1", 1, body)  # no secret: unsigned
    with pytest.raises(ValueError):
        Signer(["whsec_not base64!"])


@pytest.mark.parametrize(
    "url",
    [
        "http://[::127.0.0.1]/x", "http://[64:ff9b::7f00:1]/x", "http://[2002:7f00:1::]/x", "http://[::ffff:10.0.0.1]/x",
        "http://[64:ff9b::a9fe:a9fe]/latest", "http://[2002:c0a8:101::1]/x", "http://[::10.1.2.3]/x",
    ],
)
async def test_ipv6_forms_carrying_an_internal_ipv4_are_refused(url: str) -> None:
    with pytest.raises(OutboundRefused) as refused:
        await OutboundPolicy().check("webhook_url", url)
    assert "OUTBOUND_ALLOWLIST" in refused.value.message


@pytest.mark.parametrize("address", ["2606:4700:4700::1111", "64:ff9b::5db8:d70e", "2002:5db8:d70e::1"])
async def test_public_ipv6_and_ipv6_carrying_a_public_ipv4_pass(address: str) -> None:
    assert (await OutboundPolicy().check("audio_url", f"https://[{address}]/a.mp3")).address == address


async def test_the_allowlist_applies_to_the_embedded_ipv4() -> None:
    target = await OutboundPolicy(["10.0.0.0/8"]).check("audio_url", "http://[64:ff9b::a00:1]/a.wav")
    assert target.address == "64:ff9b::a00:1"


async def test_the_outbound_client_opens_a_new_connection_per_request() -> None:
    """Pooled connections are keyed by IP, not by Host/SNI: reuse would carry a TLS session checked for one host to
    another host on the same address. A real loopback server counts the connections it accepts."""
    connections = 0
    handlers: list[asyncio.Task[object]] = []

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        handlers.append(asyncio.current_task())  # type: ignore[arg-type]
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while await reader.readuntil(b"\r\n\r\n"):  # keep-alive: answer every request on this connection
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                await writer.drain()
        writer.close()
        await writer.wait_closed()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        async with outbound_client() as client:
            for host in ("a.example", "b.example"):
                response = await client.get(f"http://127.0.0.1:{port}/", headers={"Host": host})
                assert response.status_code == 200
        await asyncio.gather(*handlers)
    assert connections == 2


async def test_a_trickling_audio_url_download_ends_at_its_deadline(tmp_path: Path) -> None:
    """A real loopback server sends headers, then one body byte every 0.2 s (each resets httpx's per-read timeout)
    for up to a minute: the download must stop at its overall deadline as a transient (retried) failure."""
    sent = 0
    finished = asyncio.Event()
    handlers: list[asyncio.Task[object]] = []

    async def trickle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal sent
        handlers.append(asyncio.current_task())  # type: ignore[arg-type]
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 300\r\n\r\n")
        with contextlib.suppress(ConnectionError):
            while sent < 300 and not finished.is_set():
                writer.write(b"a")
                await writer.drain()
                sent += 1
                await asyncio.sleep(0.2)
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()

    server = await asyncio.start_server(trickle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    destination = tmp_path / "audio"
    async with server, outbound_client() as client:
        with pytest.raises(TransientJobError) as slow:
            await download(OutboundPolicy(["127.0.0.1"]), client, f"http://127.0.0.1:{port}/a.wav", destination,
                           1 << 20, deadline_seconds=1)
        finished.set()
        await asyncio.gather(*handlers)
    assert "AUDIO_URL_TIMEOUT_SECONDS" in str(slow.value)
    assert not destination.exists() and sent < 300  # cut off, not finished


@pytest.mark.parametrize(
    "url",
    ["http://a..b/", f"http://{'a' * 64}.com/", "http://xn--a.com/", "https://xn--zz.example/x",
     f"http://{'b' * 250}.{'c' * 10}/"],
)
async def test_a_host_idna_cannot_encode_is_refused_not_raised(url: str) -> None:
    with pytest.raises(OutboundRefused) as refused:
        await OutboundPolicy().check("audio_url", url)
    assert refused.value.code == "url_refused" and refused.value.param == "audio_url"
    assert "\n" not in refused.value.message


@pytest.mark.parametrize(
    "address",
    [
        "fec0::1",  # site-local
        "64:ff9b:1::7f00:1", "64:ff9b:1:7f00:0:100::",  # local-use NAT64, whatever it carries
        "::ffff:0:7f00:1", "::ffff:0:a00:1",  # IPv4-translated 127.0.0.1, 10.0.0.1
        "2001:0:4136:e378:8000:63bf:80ff:fffe",  # Teredo whose client is 127.0.0.1
        "fe80::5efe:7f00:1", "2001:db8::200:5efe:a00:1",  # ISATAP carrying 127.0.0.1, 10.0.0.1
    ],
)
async def test_every_ipv6_form_that_reaches_non_public_space_is_refused(address: str) -> None:
    with pytest.raises(OutboundRefused):
        await OutboundPolicy().check("webhook_url", f"http://[{address}]/hook")


def test_a_url_is_shown_without_credentials_or_query() -> None:
    from whisper_common.jobs.outbound import redact_url

    assert redact_url("https://user:pa%40ss@Hooks.example.com:8443/a/b?sig=s3cr3t&x=1#frag") == (
        "https://hooks.example.com:8443/a/b"
    )
    assert redact_url("http://[::1]:80/x?token=t") == "http://[::1]:80/x"
    assert redact_url("not a url") == "<invalid URL>" and redact_url(None) is None


async def test_the_outbound_request_log_carries_no_credentials(caplog: pytest.LogCaptureFixture) -> None:
    """httpx logs every request at INFO with its URL: the filter the outbound client installs redacts it."""
    import logging

    from aiohttp import web

    async def hello(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/{tail:.*}", hello)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    caplog.set_level(logging.INFO, logger="httpx")
    try:
        async with outbound_client() as client:
            await client.get(f"http://user:hunter2@127.0.0.1:{port}/audio.mp3?X-Amz-Signature=s3cr3t")
    finally:
        await runner.cleanup()
    lines = [record.getMessage() for record in caplog.records if record.name == "httpx"]
    assert lines and all("hunter2" not in line and "s3cr3t" not in line and "user" not in line for line in lines), lines
    assert any(f"http://127.0.0.1:{port}/audio.mp3" in line for line in lines), lines
