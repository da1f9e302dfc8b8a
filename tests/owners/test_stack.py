"""Owners through the whole platform, as `make run` composes it (Nginx → auto-start proxy → whisper-faster and
whisperx, SQLite in DATA_DIR): two user keys, an admin key, a key with a tiny daily quota and the stack's basic-auth
user, on every route that returns stored data (jobs on both services, live sessions, usage, erasure).

- the unmodified `openai` client with `api_key=` alone passes Nginx (no basic auth): transcriptions, translations,
  streaming, Realtime; and a browser's WebSocket with the key in its subprotocol;
- another owner's reads, lists, cancels and deletes are 404, the owner's own work, an admin sees all; Idempotency-Key
  is per owner; an edge user is an owner, and a client cannot pose as another by sending the header itself;
- quotas: one owner at its limit gets 429 at once and never takes the slot another owner's request needs
  (MAX_CONCURRENCY=2 with no queue, so a taken slot would show as a 503); a day's audio used up is 429
  `insufficient_quota` for requests, jobs and live sessions;
- usage per owner (GET /v1/usage and the Prometheus counters);
- revoked and malformed keys, a keys file that stops parsing (the last good keys stay, one log line);
- erasure leaves nothing of the owner on disk or in the databases (not even in the SQLite files' bytes).

One stack serves the module (whisperx is woken by the first test that needs it). PostgreSQL: tests/owners/test_postgres.py.
"""
from __future__ import annotations

import base64
import json
import socket
import sqlite3
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai import OpenAI
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from scripts.stack.local_stack import LocalStack
from tests.jobs.helpers import long_audio, submit
from tests.owners.helpers import (
    Keys,
    bearer,
    check_idempotency_is_per_owner,
    check_job_isolation,
    check_session_isolation,
    error_code,
    listed,
    make_keys,
    wait_finished,
)
from tests.realtime.audio import recording_pcm16
from tests.stack.harness import LoopbackTransport, running_local_stack
from tests.support import fixture_path, retry_lost_tls_handshake
from whisper_common.keys.file import add_key, revoke_keys

pytestmark = pytest.mark.stack

JFK = fixture_path("jfk.flac")
MADE: dict[str, str] = {}  # what earlier tests made, for the later ones (one stack per module)


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    return make_keys(tmp_path_factory.getbasetemp() / "owners-stack" / "api-keys.json")


@pytest.fixture(scope="module")
def stack(keys: Keys) -> Iterator[LocalStack]:
    run_dir = keys.path.parent  # the stack's keys file is <run dir>/api-keys.json: the one made above
    env = {
        "HF_HUB_OFFLINE": "1", "HF_TOKEN": "", "DATA_DIR": str(run_dir / "data"), "MAX_CONCURRENCY": "2",
        "MAX_QUEUE": "0", "USAGE_FLUSH_SECONDS": "0.5", "WHISPER__CPU_THREADS": "1",
    }
    # No per-address limit at Nginx: its 429 would be mistaken for a quota's, and the tests poll.
    with running_local_stack(run_dir, env, logs_name="owners-stack-logs", rate_limit=0) as local:
        yield local


def edge(stack: LocalStack, host: str | None = None, *, key: str | None = None, basic: bool = False,
         headers: dict[str, str | bytes] | None = None) -> httpx.Client:
    assert stack.credentials is not None
    return httpx.Client(
        base_url=f"https://{host or stack.settings.whisper_host}:{stack.settings.https_port}",
        transport=LoopbackTransport(verify=ssl_context(stack)),
        auth=(stack.credentials.user, stack.credentials.password) if basic else None,
        headers={**(bearer(key) if key else {}), **(headers or {})}, timeout=600,
    )


def ssl_context(stack: LocalStack) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(stack.paths.cert))


def openai_client(stack: LocalStack, key: str, host: str | None = None) -> OpenAI:
    """The client as a program uses it: `api_key=` is its only credential (the HTTP client only resolves the
    .localhost name and trusts the stack's self-signed certificate)."""
    base = f"{host or stack.settings.whisper_host}:{stack.settings.https_port}/v1"
    return OpenAI(
        api_key=key, base_url=f"https://{base}", websocket_base_url=f"wss://{base}", max_retries=0,
        http_client=httpx.Client(transport=LoopbackTransport(verify=ssl_context(stack)), timeout=600),  # type: ignore[arg-type]
    )


def socket_options(stack: LocalStack) -> dict:
    return {"sock": socket.create_connection(("127.0.0.1", stack.settings.https_port)), "ssl": ssl_context(stack)}


def live_session(stack: LocalStack, key: str) -> str:
    """A Realtime transcription session of jfk.flac through the edge (manual commit); returns its id."""
    pcm = recording_pcm16("jfk.flac")

    def opened() -> tuple[Any, Any]:
        manager = openai_client(stack, key).realtime.connect(
            extra_query={"intent": "transcription"}, websocket_connection_options=socket_options(stack)  # type: ignore[arg-type]
        )
        return manager, manager.enter()

    manager, connection = retry_lost_tls_handshake(opened)
    try:
        created = connection.recv()
        assert created.type == "session.created"
        session_id = created.session.model_dump()["id"]
        connection.session.update(session={
            "type": "transcription",
            "audio": {"input": {"format": {"type": "audio/pcm", "rate": 24000}, "turn_detection": None,
                                "transcription": {"model": "whisper-1", "language": "en"}}},
        })
        assert connection.recv().type == "session.updated"
        for offset in range(0, len(pcm), 48_000):
            connection.input_audio_buffer.append(audio=base64.b64encode(pcm[offset:offset + 48_000]).decode())
        connection.input_audio_buffer.commit()
        while True:
            event = connection.recv()
            assert event.type != "error", event
            if event.type == "conversation.item.input_audio_transcription.completed":
                assert "country" in event.transcript.lower()
                return session_id
    finally:
        manager.__exit__(None, None, None)


def test_the_openai_client_with_a_key_alone_passes_the_edge(stack: LocalStack, keys: Keys) -> None:
    client = openai_client(stack, keys.team_a)
    with JFK.open("rb") as audio:
        assert "country" in client.audio.transcriptions.create(model="whisper-1", file=audio).text.lower()
    with JFK.open("rb") as audio, pytest.raises(openai.BadRequestError, match="English-only"):
        # Past the edge and the key check: the service itself answers that tiny.en cannot translate.
        client.audio.translations.create(model="whisper-1", file=audio)
    with JFK.open("rb") as audio:
        events = list(client.audio.transcriptions.create(model="whisper-1", file=audio, stream=True))
    assert events[-1].type == "transcript.text.done" and "country" in events[-1].text.lower()
    MADE["session"] = live_session(stack, keys.team_a)
    with pytest.raises(Exception) as refused:  # noqa: PT011 - the SDK's error type for a 401 handshake varies
        live_session(stack, "wsk_not-a-key")
    assert "401" in str(refused.value)
    whisperx = openai_client(stack, keys.team_a, stack.settings.whisperx_host)
    with JFK.open("rb") as audio:
        assert "country" in whisperx.audio.transcriptions.create(model="whisper-1", file=audio).text.lower()


def test_a_browser_key_subprotocol_opens_a_session_through_the_edge(stack: LocalStack, keys: Keys) -> None:
    url = f"wss://{stack.settings.whisper_host}:{stack.settings.https_port}/v1/realtime?intent=transcription"
    with retry_lost_tls_handshake(lambda: connect(
            url, subprotocols=["realtime", f"openai-insecure-api-key.{keys.team_b}"],  # type: ignore[list-item]
            **socket_options(stack))) as browser:
        assert browser.subprotocol == "realtime"  # never the key
        assert json.loads(browser.recv(timeout=60))["type"] == "session.created"
    with pytest.raises(InvalidStatus) as refused:
        retry_lost_tls_handshake(lambda: connect(
            url, subprotocols=["realtime", "openai-insecure-api-key.wsk_wrong"], **socket_options(stack)))  # type: ignore[list-item]
    assert refused.value.response.status_code == 401  # (the auto-start proxy answers a refused upgrade its own way)


def test_every_stored_data_route_is_its_owners_and_an_admins(stack: LocalStack, keys: Keys) -> None:
    with (edge(stack, key=keys.team_a) as a, edge(stack, key=keys.team_b) as b, edge(stack, key=keys.admin) as admin,
          edge(stack, basic=True) as user):
        mine = submit(a, JFK, metadata={"marker": "erase-me"}).json()["id"]
        theirs = submit(user, JFK).json()["id"]
        MADE.update(job_a=mine, job_user=theirs)
        for job_id in (mine, theirs):
            assert wait_finished(admin, job_id)["status"] == "succeeded"
        assert a.get(f"/v1/jobs/{mine}").json()["owner"] == "team-a"
        assert user.get(f"/v1/jobs/{theirs}").json()["owner"] == stack.credentials.user  # type: ignore[union-attr]
        check_job_isolation(mine, a, b, admin)
        check_job_isolation(theirs, user, a, admin)
        check_session_isolation(f"/v1/realtime/sessions/{MADE['session']}", a, user, admin)
        check_idempotency_is_per_owner(submit, a, b, fixture_path("hotwords.mp3"))
        # The queue's other states: a queued or running job of another owner cannot be canceled by it either.
        queued = submit(b, fixture_path("hotwords.mp3")).json()["id"]
        assert a.delete(f"/v1/jobs/{queued}").status_code == 404
        assert b.delete(f"/v1/jobs/{queued}").status_code in (200, 202)
        assert admin.delete(f"/v1/jobs/{theirs}").json()["deleted"] is True  # an admin deletes anyone's
        assert user.get(f"/v1/jobs/{theirs}").status_code == 404
    with (edge(stack, stack.settings.whisperx_host, key=keys.team_a) as a,
          edge(stack, stack.settings.whisperx_host, key=keys.team_b) as b,
          edge(stack, stack.settings.whisperx_host, key=keys.admin) as admin):
        job_id = submit(a, JFK, metadata={"marker": "erase-me"}).json()["id"]
        MADE["whisperx_job"] = job_id
        assert wait_finished(admin, job_id)["status"] == "succeeded"
        check_job_isolation(job_id, a, b, admin)


def test_the_edge_user_header_cannot_be_sent_by_a_client(stack: LocalStack, keys: Keys) -> None:
    spoof = {"X-Whisper-User": "boss", "X-Whisper-Edge-Auth": "basic"}
    with edge(stack, basic=True, headers=spoof) as user, edge(stack, key=keys.team_a, headers=spoof) as a:
        seen = listed(user)
        assert MADE["job_a"] not in seen  # still the basic-auth user, not the admin it named
        assert a.get(f"/v1/jobs/{MADE['job_a']}").json()["owner"] == "team-a"  # the key's owner, not the header's
    with edge(stack, headers=spoof) as nobody:
        refused = nobody.get("/v1/jobs")
        assert refused.status_code == 401 and error_code(refused) == "unauthorized"  # Nginx: no password, no key
    basic_admin = "Basic " + base64.b64encode(b"boss:guess").decode()
    with edge(stack, headers={"Authorization": f"Bearer {keys.team_b}"}) as b:
        assert MADE["job_a"] not in listed(b)
    url = f"wss://{stack.settings.whisper_host}:{stack.settings.https_port}/v1/realtime?intent=transcription"
    with retry_lost_tls_handshake(lambda: connect(
            url, subprotocols=["realtime", f"openai-insecure-api-key.{keys.team_b}"],  # type: ignore[list-item]
            additional_headers={"Authorization": basic_admin, "X-Whisper-User": "boss"},
            **socket_options(stack))) as browser:
        created = json.loads(browser.recv(timeout=60))
    assert created["type"] == "session.created"
    with edge(stack, key=keys.team_b) as b, edge(stack, key=keys.admin) as admin:
        path = f"/v1/realtime/sessions/{created['session']['id']}"
        assert b.get(path).status_code == 200 and admin.get(path).json()["owner"] == "team-b"


def inference_active(client: httpx.Client) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith("whisper_faster_inference_active "):
            return float(line.split()[1])
    return 0.0


def test_an_owner_at_its_limit_gets_429_and_leaves_the_slots_to_others(
    stack: LocalStack, keys: Keys, tmp_path: Path
) -> None:
    long = long_audio(fixture_path("dev00.wav"), tmp_path / "long.wav", repeats=4)  # 2 min: seconds of decoding
    held: dict[str, httpx.Response] = {}

    def hold() -> None:
        with edge(stack, key=keys.team_b) as b, long.open("rb") as audio:
            held["response"] = b.post("/v1/audio/transcriptions", files={"file": audio})

    holder = threading.Thread(target=hold)
    holder.start()
    with edge(stack, key=keys.team_b) as b, edge(stack, key=keys.team_a) as a, edge(stack, key=keys.admin) as admin:
        deadline = time.monotonic() + 60
        while inference_active(admin) < 1:
            assert time.monotonic() < deadline and holder.is_alive(), held
            time.sleep(0.1)
        with JFK.open("rb") as audio:
            over = b.post("/v1/audio/transcriptions", files={"file": audio})
        assert over.status_code == 429 and error_code(over) == "rate_limit_exceeded", over.text
        assert over.json()["error"]["type"] == "rate_limit_error" and int(over.headers["retry-after"]) > 0
        # MAX_QUEUE=0: had team-b's refused request taken the second slot, team-a would get 503 server_busy.
        with JFK.open("rb") as audio:
            served = a.post("/v1/audio/transcriptions", files={"file": audio})
        assert served.status_code == 200, served.text
        assert holder.is_alive(), "team-b's long request ended too soon to prove anything"
        # Jobs at once: team-b may have two queued or running.
        accepted = [submit(b, fixture_path("hotwords.mp3")) for _ in range(2)]
        assert [r.status_code for r in accepted] == [202, 202]
        third = submit(b, fixture_path("hotwords.mp3"))
        assert third.status_code == 429 and error_code(third) == "rate_limit_exceeded", third.text
    holder.join(300)
    assert held["response"].status_code == 200, held["response"].text


def test_a_day_of_audio_used_up_is_insufficient_quota_everywhere(stack: LocalStack, keys: Keys) -> None:
    with edge(stack, key=keys.thrifty) as thrifty:
        with JFK.open("rb") as audio:  # 11 s of audio, more than the 3 s a day: it finishes, and is counted
            assert thrifty.post("/v1/audio/transcriptions", files={"file": audio}).status_code == 200
        with JFK.open("rb") as audio:
            over = thrifty.post("/v1/audio/transcriptions", files={"file": audio})
        assert over.status_code == 429 and error_code(over) == "insufficient_quota", over.text
        assert over.json()["error"]["type"] == "insufficient_quota"
        assert 0 < int(over.headers["retry-after"]) <= 86400  # at midnight UTC
        job = submit(thrifty, JFK)
        assert job.status_code == 429 and error_code(job) == "insufficient_quota"
    url = f"wss://{stack.settings.whisper_host}:{stack.settings.https_port}/v1/realtime?intent=transcription"
    with pytest.raises(InvalidStatus) as refused:
        retry_lost_tls_handshake(lambda: connect(url, additional_headers=bearer(keys.thrifty), **socket_options(stack)))
    assert refused.value.response.status_code == 429  # (the proxy answers a refused upgrade with its own body)


def test_usage_is_counted_per_owner(stack: LocalStack, keys: Keys) -> None:
    with edge(stack, key=keys.team_a) as a, edge(stack, key=keys.admin) as admin:
        mine = a.get("/v1/usage", params={"group_by": "total"}).json()
        assert mine["object"] == "list" and {row["owner"] for row in mine["data"]} == {"team-a"}
        audio = {row["route"]: row["audio_seconds"] for row in mine["data"] if row["audio_seconds"]}
        assert audio["/v1/audio/transcriptions"] >= 3 * 11 and audio["/v1/jobs"] >= 11  # sync, stream, jfk job
        assert audio["/v1/realtime"] >= 11
        requests = {row["route"]: row["requests"] for row in mine["data"] if row["requests"]}
        assert requests["/v1/audio/translations"] == 1 and requests["/v1/audio/transcriptions"] >= 2  # the 400 too
        assert sum(row["jobs"] for row in mine["data"]) >= 2
        days = a.get("/v1/usage").json()
        assert {row["day"] for row in days["data"]} == {time.strftime("%Y-%m-%d", time.gmtime())}
        everyone = admin.get("/v1/usage", params={"group_by": "total"}).json()
        assert {"team-a", "team-b", "boss", "thrifty"} <= {row["owner"] for row in everyone["data"]}
        only_b = admin.get("/v1/usage", params={"owner": "team-b"}).json()
        assert {row["owner"] for row in only_b["data"]} == {"team-b"}
        for bad in ({"owner": "team-b"}, {"from": "2025-02-30"}, {"from": "2025-02-02", "to": "2025-02-01"},
                    {"group_by": "week"}, {"from": "2020-01-01", "to": "2025-01-01"}, {"from": "x" * 5000}):
            refused = a.get("/v1/usage", params=bad)
            assert refused.status_code in (400, 404) and error_code(refused), (bad, refused.text)
        metrics = admin.get("/metrics").text
    assert 'whisper_faster_owner_audio_seconds_total{model="tiny.en",owner="team-a",route="/v1/audio/transcriptions"}' in metrics
    assert 'whisper_faster_owner_requests_total{owner="team-b",route="/v1/jobs"}' in metrics


def test_revoked_malformed_and_unparsable_keys(stack: LocalStack, keys: Keys) -> None:
    late, entry = add_key(keys.path, "late-comer")
    with edge(stack, key=late) as client:
        deadline = time.monotonic() + 5
        while client.get("/v1/jobs").status_code != 200:  # added while running: accepted within a second
            assert time.monotonic() < deadline
            time.sleep(0.2)
        revoke_keys(keys.path, entry.id)
        while client.get("/v1/jobs").status_code != 401:
            assert time.monotonic() < deadline + 5
            time.sleep(0.2)
    for header in ("Bearer wsk_" + "x" * 43, "Bearer \u00e9\u00e9\u00e9".encode(), b"Bearer \xff\xfe",
                   "Bearer a b c", "Bearer " + "k" * 4000):
        with edge(stack, headers={"Authorization": header}) as client:
            refused = client.get("/v1/jobs")
            assert refused.status_code == 401 and error_code(refused) == "invalid_api_key", (header, refused.text)
    good = keys.path.read_text()
    log = stack.paths.logs / "autostart.log"
    before = log.read_text().count("API keys file not used")
    keys.path.write_text(good[: len(good) // 2])  # a half-written file
    try:
        with edge(stack, key=keys.team_a) as a:
            for _ in range(6):
                assert a.get("/v1/jobs").status_code == 200  # the last good set stays
                time.sleep(0.4)
    finally:
        keys.path.write_text(good)
    lines = [json.loads(line) for line in log.read_text().splitlines()[-2000:] if "API keys file not used" in line]
    assert len(lines) - before == 1 and lines[-1]["level"] == "error", lines  # whisper-faster's one line
    assert "keeping the last good set" in lines[-1]["message"]


def test_refused_handshakes_are_not_logged_as_errors(stack: LocalStack) -> None:
    url = f"wss://{stack.settings.whisper_host}:{stack.settings.https_port}/v1/realtime?intent=transcription"
    for _ in range(5):
        with pytest.raises(InvalidStatus):
            retry_lost_tls_handshake(lambda: connect(url, additional_headers=bearer("wsk_nope"), **socket_options(stack)))
    records = [json.loads(line) for line in (stack.paths.logs / "autostart.log").read_text().splitlines()
               if line.startswith("{")]
    assert not [r for r in records if "without completing handshake" in r.get("message", "")], "an ERROR per denial"
    assert [r for r in records if "WebSocket /v1/realtime" in r.get("message", "") and "401" in r["message"]]


def test_erasure_leaves_nothing_of_the_owner(stack: LocalStack, keys: Keys) -> None:
    data = Path(stack.service_env["DATA_DIR"])
    jobs = [MADE["job_a"], MADE["whisperx_job"]]
    assert all((data / "jobs" / job_id).is_dir() for job_id in jobs)
    for host, made in ((stack.settings.whisper_host, (MADE["job_a"], MADE["session"])),
                       (stack.settings.whisperx_host, (MADE["whisperx_job"],))):
        with edge(stack, host, key=keys.team_a) as a:  # the transcript library found them, until the erasure
            hits = a.get("/v1/transcripts", params={"q": "country", "limit": 100}).json()["data"]
            assert set(made) <= {hit["id"] for hit in hits}, (host, hits)
    with edge(stack, key=keys.team_b) as b:  # not an admin: another owner's data is not its to erase
        assert b.delete("/v1/owners/team-a/data").status_code == 404
    for host in (stack.settings.whisper_host, stack.settings.whisperx_host):
        with edge(stack, host, key=keys.team_a) as a:
            erased = a.delete("/v1/owners/me/data")
            assert erased.status_code == 200 and erased.json()["owner"] == "team-a", erased.text
            assert erased.json()["removed"]["jobs"] >= 1
            assert listed(a) == set()
            assert erased.json()["removed"]["transcripts"] >= 1
            assert a.get("/v1/transcripts", params={"q": "country"}).json()["data"] == []
    assert "realtime_sessions" not in erased.json()["removed"]  # whisperx keeps no live sessions
    with edge(stack, key=keys.admin) as admin:
        assert admin.get(f"/v1/realtime/sessions/{MADE['session']}").status_code == 404
        assert admin.delete(f"/v1/owners/{stack.credentials.user}/data").json()["owner"] == stack.credentials.user  # type: ignore[union-attr]
        usage = admin.get("/v1/usage", params={"owner": "team-a", "group_by": "total"}).json()
        assert usage["total"]["audio_seconds"] > 0  # aggregate usage is kept
    assert not any((data / "jobs" / job_id).exists() for job_id in jobs)
    for name in ("jobs.sqlite3", "realtime.sqlite3", "transcripts.sqlite3"):
        with sqlite3.connect(data / name) as db:
            if name == "jobs.sqlite3":
                assert db.execute("SELECT COUNT(*) FROM jobs WHERE owner = 'team-a'").fetchone() == (0,)
                assert db.execute("SELECT COUNT(*) FROM webhook_deliveries WHERE job_id IN (?, ?)", jobs).fetchone() == (0,)
            elif name == "realtime.sqlite3":
                assert db.execute("SELECT COUNT(*) FROM realtime_sessions WHERE owner = 'team-a'").fetchone() == (0,)
            else:  # both services' transcript index (one DATA_DIR here)
                assert db.execute("SELECT COUNT(*) FROM transcripts WHERE owner = 'team-a'").fetchone() == (0,)
        db.close()
    # Not even in the files' bytes (deleted rows are overwritten, the WAL emptied): the job's metadata marker, the
    # job and session ids.
    for path in data.glob("*.sqlite3*"):
        raw = path.read_bytes()
        for trace in (b"erase-me", MADE["session"].encode(), *(job_id.encode() for job_id in jobs)):
            assert trace not in raw, (path.name, trace)
