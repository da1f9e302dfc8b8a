"""What the transcript library's service tests share: a live session over the WebSocket, searching, and the
error shape every refusal must have."""
from __future__ import annotations

import base64
import json
import socket
import time
from typing import Any

import httpx

from tests.realtime.audio import recording_pcm16
from tests.realtime.conftest import next_event, open_socket
from tests.service_servers import Server


def live_session(server: Server, key: str, audio: str = "jfk.flac") -> str:
    """A session that transcribes `audio` (one commit) and ends; returns its id."""
    with open_socket(server, key=key) as socket:
        created = next_event(socket)
        socket.send(json.dumps({"type": "session.update", "session": {"type": "transcription", "audio": {"input": {
            "format": {"type": "audio/pcm", "rate": 24000}, "turn_detection": None}}}}))
        assert next_event(socket)["type"] == "session.updated"
        pcm = recording_pcm16(audio)
        for offset in range(0, len(pcm), 48_000):
            socket.send(json.dumps({"type": "input_audio_buffer.append",
                                    "audio": base64.b64encode(pcm[offset:offset + 48_000]).decode()}))
        socket.send(json.dumps({"type": "input_audio_buffer.commit"}))
        while (event := next_event(socket, timeout=120))["type"] != \
                "conversation.item.input_audio_transcription.completed":
            assert event["type"] != "error", event
    return str(created["session"]["id"])


def search(client: httpx.Client, **params: Any) -> dict[str, Any]:
    response = client.get("/v1/transcripts", params=params)
    assert response.status_code == 200, response.text
    return response.json()


def found(client: httpx.Client, **params: Any) -> list[str]:
    return [hit["id"] for hit in search(client, **params)["data"]]


def wait_found(client: httpx.Client, transcript_id: str, timeout: float = 30, **params: Any) -> dict[str, Any]:
    """The hit for `transcript_id` (a session is indexed just after its socket closes)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for hit in search(client, **params)["data"]:
            if hit["id"] == transcript_id:
                return hit
        time.sleep(0.2)
    raise AssertionError(f"{transcript_id} not found by {params} within {timeout} s")


def assert_error(response: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, (response.status_code, response.text[:500])
    assert response.headers["content-type"].startswith("application/json"), response.headers
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"], error
    if code is not None:
        assert error["code"] == code, error
    return error


def raw_get(base_url: str, target: str, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    """A GET over a plain socket, for a request line longer than httpx builds (64 KiB): status, headers, body. The
    server may answer and close before it has read all of it."""
    host, port = base_url.removeprefix("http://").split(":")
    lines = [f"GET {target} HTTP/1.1", f"Host: {host}:{port}", "Connection: close",
             *(f"{name}: {value}" for name, value in headers.items())]
    request = ("\r\n".join(lines) + "\r\n\r\n").encode()
    with socket.create_connection((host, int(port)), timeout=60) as connection:
        try:
            connection.sendall(request)
        except (BrokenPipeError, ConnectionResetError):
            pass
        answer = b""
        try:
            while chunk := connection.recv(65536):
                answer += chunk
        except ConnectionResetError:
            pass
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    parsed = dict(line.split(": ", 1) for line in header_lines if ": " in line)
    return int(status_line.split()[1]), {k.lower(): v for k, v in parsed.items()}, body
