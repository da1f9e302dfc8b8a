"""The upgrade drill: `make up` on a running deployment with a new release loses nothing and fails no request.

Deploy with `make up`; queue jobs through Nginx (a long one running, webhooks to a receiver on this host), open a live
session (`/v1/realtime` through Nginx, jfk.flac spoken into it, its utterances transcribed and stored), then a new
release and `make up` again (the proxy replaced too, WHISPER_PROXY_RESTART=1: a hand-over) while a client keeps
sending requests through Nginx: every job reaches `succeeded` exactly once (one attempt counted: the run the upgrade
interrupted is released, not failed) and its result is readable from the new containers, each webhook is delivered
once, no request gets a 5xx, the session's transcript is stored and closed, the jobs store is migrated to the new
release's schema, and the old release refuses that schema with one line (a rollback needs the backup,
docs/deployment.md). `make up` run once more changes nothing (no container re-created, the proxy not restarted, Nginx
not reloaded). Then a re-run fails on purpose after each step (WHISPER_UP_FAIL_AT; newer images again for the steps
that hold a service): the deployment keeps answering and no service stays held.

"A new release" is the images `make images` built, rebuilt (`docker build` FROM them, tagged `latest` as `make images`
tags them) with one more jobs-store migration appended to the image's own `whisper_common/jobs/schema.py`, as a
release with a schema change brings: new image ids and a migration to run, without rebuilding the multi-GB layers or
touching the checkout other sessions work in. `latest` is put back afterwards, and the derived images removed.

Real everything else: dockerd, compose, the proxy as `make up` runs it without systemd, the host's Nginx (see
deployment.py), tiny.en, the shared audio fixtures.
"""
from __future__ import annotations

import base64
import json
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from websockets.sync.client import ClientConnection, connect

from tests.containers.conftest import BuiltImages
from tests.containers.deployment import (
    HOSTS,
    PASSWORD,
    USER,
    Deployment,
    Receiver,
    exclusive_deployment,
    host_address,
    job_views,
    long_recording,
    proxy_events,
    require_stock_nginx,
    submit_job,
    wait_for_jobs,
    webhook_receiver,
)
from tests.containers.docker_cli import CONTAINERS, PREFIX, docker, inspect
from tests.realtime.audio import recording_pcm16
from tests.stack.harness import require_nginx
from tests.support import fixture_path, retry_lost_tls_handshake

pytestmark = [pytest.mark.docker, pytest.mark.stack]

SERVICES = ("whisper-faster", "whisperx")
# In the order the drill fails them: the last two hold a service, so they get newer images first.
FAIL_STEPS = ("images", "proxy", "nginx", "check", "held", "containers")


@pytest.fixture
def deployment(tmp_path: Path, built_images: BuiltImages) -> Iterator[Deployment]:
    require_nginx()
    require_stock_nginx()
    with exclusive_deployment(), restored_images():
        deployment = Deployment(tmp_path)
        deployment.idle_timeout = 300
        deployment.extra_env = {
            "NGINX_RATE_LIMIT": "0",  # the steady client below
            "JOB_RETRY_SECONDS": "2",
            # A busy test machine must not make the live session's guards refuse it (bench/ measures speed).
            "REALTIME_MAX_LAG_SECONDS": "300", "REALTIME_MAX_LOAD": "10", "REALTIME_MAX_CPU": "10",
            "WHISPER_UPGRADE_DRAIN": "60",
        }
        try:
            yield deployment
        finally:
            deployment.cleanup(deployment.projects() or {"whisper-faster", "whisperfaster", "whisperx"})


# --- a new release -------------------------------------------------------------------------------------------------

# Appended to the image's whisper_common/jobs/schema.py: the release after this one adds a jobs migration (an index:
# not marked additive, so the release before refuses the migrated schema, as it would a column it cannot ignore).
DRILL_MIGRATION = """

# The upgrade drill's next release (tests/containers/test_upgrade.py): one more migration.
JOBS_SCHEMA = Schema(JOBS_SCHEMA.store, JOBS_SCHEMA.tables, JOBS_SCHEMA.migrations + (Migration(
    len(JOBS_SCHEMA.migrations) + 1, "upgrade drill: index jobs (queue, finished_at)",
    ("CREATE INDEX IF NOT EXISTS jobs_upgrade_drill ON jobs (queue, finished_at)",)),))
"""
PATCH_SCRIPT = """import pathlib, whisper_common.jobs.schema as schema
path = pathlib.Path(schema.__file__)
path.write_text(path.read_text() + pathlib.Path('/tmp/drill_migration.txt').read_text())
"""


class restored_images:  # noqa: N801 - used as a context manager
    """Remembers what `latest` is now; afterwards puts it back and removes the images derived in between."""

    derived: list[str] = []
    originals: dict[str, str] = {}

    def __enter__(self) -> restored_images:
        restored_images.originals = {service: image_id(service) for service in SERVICES}
        restored_images.derived = []
        return self

    def __exit__(self, *_: object) -> None:
        for service, original in restored_images.originals.items():
            if image_id(service) in restored_images.derived:
                docker("tag", original, f"{PREFIX}/{service}:latest")
        for derived in reversed(restored_images.derived):  # children before the images they were built from
            docker("rmi", derived, check=False)


def image_id(service: str) -> str:
    info = inspect(f"{PREFIX}/{service}:latest")
    assert info is not None, f"{PREFIX}/{service}:latest is missing (make images)"
    return str(info["Id"])


def new_images(folder: Path, mark: str, migration: bool) -> dict[str, str]:
    """`latest` of each service rebuilt with a label (and, with `migration`, the drill's jobs migration): a new image
    id each. Returns the new ids."""
    made = {}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "drill_migration.txt").write_text(DRILL_MIGRATION)
    (folder / "patch_schema.py").write_text(PATCH_SCRIPT)
    for service in SERVICES:
        steps = ["USER root", "COPY drill_migration.txt patch_schema.py /tmp/",
                 "RUN python /tmp/patch_schema.py && rm /tmp/patch_schema.py /tmp/drill_migration.txt",
                 "USER app"] if migration else []
        (folder / "Dockerfile").write_text("\n".join([f"FROM {PREFIX}/{service}:latest",
                                                      f"LABEL org.whisper-platform.test-upgrade={mark}", *steps]) + "\n")
        built = subprocess.run(["docker", "build", "-q", "-t", f"{PREFIX}/{service}:latest", str(folder)],
                               capture_output=True, text=True, timeout=600)
        assert built.returncode == 0, built.stderr
        made[service] = image_id(service)
        restored_images.derived.append(made[service])
    return made


def schema_versions(container: str) -> list[tuple[str, int, str]]:
    """The jobs store's rows of whisper_schema_versions, read inside the running container (no request)."""
    query = ("import json, sqlite3; print(json.dumps(sqlite3.connect('/data/jobs.sqlite3').execute("
             "\"SELECT store, version, name FROM whisper_schema_versions WHERE store = 'jobs' ORDER BY version\""
             ").fetchall()))")
    return [tuple(row) for row in json.loads(docker("exec", container, "python", "-c", query, timeout=60).stdout)]


def open_with_image(image: str, container: str) -> subprocess.CompletedProcess[str]:
    """The jobs store of `container`'s /data opened by another image's code, as that release's service would at start."""
    code = ("from pathlib import Path; from whisper_common.db import open_database; "
            "from whisper_common.jobs.schema import JOBS_SCHEMA; "
            "open_database(Path('/data/jobs.sqlite3'), JOBS_SCHEMA).close()")
    return docker("run", "--rm", "--volumes-from", container, "--network", "none", "--entrypoint", "python", image,
                  "-c", code, check=False, timeout=120)


# --- what the drill looks at ----------------------------------------------------------------------------------------


def ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-5000:]
    return result


def container_ids() -> dict[str, str]:
    return {name: str((inspect(name) or {}).get("Id")) for name in CONTAINERS.values()}


def proxy_pid(deployment: Deployment) -> int:
    return int((deployment.state_dir / "autostart.pid").read_text())


class Steady:
    """A client that keeps sending requests through Nginx, to both sites, one after another: the model lists, the
    job list, and a small synchronous transcription now and then (a POST with a body: the proxy's full path)."""

    def __init__(self, deployment: Deployment) -> None:
        self.deployment = deployment
        self.outcomes: list[tuple[float, str, str]] = []  # (time, what, status or error)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Steady:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=700)

    def _run(self) -> None:
        round_ = 0
        with self.deployment.client(timeout=600) as http:
            while not self._stop.is_set():
                round_ += 1
                for service in SERVICES:
                    self._one(http, f"GET {service} /v1/models", "GET", self.deployment.url(service, "/v1/models"))
                    self._one(http, f"GET {service} /v1/jobs", "GET", self.deployment.url(service, "/v1/jobs"))
                if round_ % 10 == 0:
                    audio = fixture_path("jfk.flac")
                    self._one(http, "POST whisper-faster /v1/audio/transcriptions", "POST",
                              self.deployment.url("whisper-faster", "/v1/audio/transcriptions"),
                              files={"file": ("jfk.flac", audio.read_bytes())}, data={"model": "whisper-1"})
                time.sleep(0.2)

    def _one(self, http: httpx.Client, what: str, method: str, url: str, **kwargs: object) -> None:
        try:
            answer = http.request(method, url, **kwargs)  # type: ignore[arg-type]
            # A 5xx keeps its body: Nginx's and the proxy's JSON say which of them answered, and why.
            status = str(answer.status_code) + (f" {answer.text[:300]}" if answer.status_code >= 500 else "")
        except httpx.HTTPError as exc:
            status = f"{type(exc).__name__}: {exc}"
        self.outcomes.append((time.monotonic(), what, status))

    def failures(self) -> list[tuple[float, str, str]]:
        return [outcome for outcome in self.outcomes if not outcome[2].startswith(("2", "3", "4"))]


def open_session(deployment: Deployment) -> ClientConnection:
    host = HOSTS["whisper-faster"]
    credentials = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    return retry_lost_tls_handshake(lambda: connect(
        f"wss://{host}:{deployment.https_port}/v1/realtime?intent=transcription",
        sock=socket.create_connection(("127.0.0.1", deployment.https_port), timeout=30), ssl=deployment.ssl_context(),
        server_hostname=host, open_timeout=300, max_size=None, additional_headers={"Authorization": f"Basic {credentials}"},
    ))


def speak(session: ClientConnection) -> tuple[str, str]:
    """jfk.flac into the session, as a microphone would send it; the session id and the transcripts of its utterances
    (its pauses may cut it in two or three) once the last words, "... for your country", are transcribed."""
    created = json.loads(session.recv(timeout=300))
    assert created["type"] == "session.created", created
    pcm = recording_pcm16("jfk.flac")
    step = 4800 * 2  # 0.2 s of PCM16 at 24 kHz
    for start in range(0, len(pcm), step):
        session.send(json.dumps({"type": "input_audio_buffer.append",
                                 "audio": base64.b64encode(pcm[start:start + step]).decode()}))
    texts: list[str] = []
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        event = json.loads(session.recv(timeout=300))
        if event["type"] == "conversation.item.input_audio_transcription.completed":
            texts.append(str(event["transcript"]))
            if "country" in texts[-1].lower():
                return str(created["session"]["id"]), " ".join(texts)
        assert event["type"] != "error", event
    raise AssertionError(f"the last words not transcribed within 300 s: {texts}")


def assert_answering(deployment: Deployment, step: str) -> None:
    with deployment.client(timeout=600) as http:
        for service in SERVICES:
            answer = http.get(deployment.url(service, "/v1/models"))
            assert answer.status_code == 200, f"after a failure at '{step}': {service} answers {answer.status_code}"
    held = {host: s["held"] for host, s in deployment.proxy_status().items()}
    assert not any(held.values()), f"after a failure at '{step}' a service stays held: {held}"


# --- the drill --------------------------------------------------------------------------------------------------------


@pytest.mark.timeout(2400)
def test_upgrade_drill_a_new_release_loses_no_job_webhook_session_or_request(deployment: Deployment,
                                                                            tmp_path: Path) -> None:
    address = host_address()
    if address is None:
        pytest.skip("no host address outside Docker's bridges for the webhook receiver")
    deployment.extra_env["OUTBOUND_ALLOWLIST"] = address
    started = time.monotonic()
    with webhook_receiver(address) as receiver:
        ok(deployment.make("up"))
        # The next release's images, built now (the running containers keep theirs until the upgrade).
        images = new_images(tmp_path / "release-2", uuid.uuid4().hex[:8], migration=True)

        # 1. Work under way: a job on whisperx; a live session on whisper-faster with one utterance transcribed and
        #    stored; then a long job running on whisper-faster and two more queued behind it (one worker), each job
        #    announced by a webhook.
        jobs: dict[str, str] = {}
        with deployment.client() as http:
            jobs[submit_job(http, deployment, "whisperx", webhook=receiver.url("/x/0"))] = "whisperx"
        session = open_session(deployment)
        session_id, spoken = speak(session)
        assert "fellow americans" in spoken.lower(), spoken
        with deployment.client() as http:
            long_job = submit_job(http, deployment, "whisper-faster", long_recording(tmp_path, 4),
                                  receiver.url("/faster/long"))
            jobs[long_job] = "whisper-faster"
            for n in range(2):
                jobs[submit_job(http, deployment, "whisper-faster", webhook=receiver.url(f"/faster/{n}"))] = \
                    "whisper-faster"
            deadline = time.monotonic() + 300
            while job_views(http, deployment, "whisper-faster")[long_job]["status"] != "running":
                assert time.monotonic() < deadline, "the long job never ran"
                time.sleep(0.5)
        old_versions = schema_versions(CONTAINERS["whisper-faster"])
        old_release = restored_images.originals["whisper-faster"]

        # 2. A new release, and make up again while the client keeps sending requests; the proxy is replaced too.
        old_ids = container_ids()
        switch = time.monotonic()
        with Steady(deployment) as steady:
            time.sleep(2)
            upgrade = ok(deployment.make("up", env={**deployment.env(), "WHISPER_PROXY_RESTART": "1"}))
            time.sleep(5)  # requests after the switch, to the new containers
        switch = time.monotonic() - switch
        for service in SERVICES:
            assert f"holding {service} on the proxy" in upgrade.stdout, upgrade.stdout[-4000:]
        assert "took over from pid" in upgrade.stdout, upgrade.stdout[-4000:]
        assert len(steady.outcomes) > 10, steady.outcomes
        assert not steady.failures(), f"requests failed during the upgrade: {steady.failures()}"
        new_ids = container_ids()
        for service, container in CONTAINERS.items():
            assert new_ids[container] != old_ids[container], f"{container} was not re-created"
            assert (inspect(container) or {})["Image"] == images[service], f"{container} runs an old image"

        # 3. Nothing lost: every job succeeded, once, its result readable; every webhook delivered, once; the session
        #    stored and closed.
        try:
            session.recv(timeout=60)  # the old container closed the session when it stopped
        except Exception:  # noqa: BLE001 - closed either way is what matters
            pass
        with deployment.client() as http:
            for service in SERVICES:
                ids = {job_id for job_id, owner in jobs.items() if owner == service}
                finished = wait_for_jobs(http, deployment, service, ids, 600, delivered=True)
                for job_id, job in finished.items():
                    assert job["status"] == "succeeded", job
                    assert job["attempts"] == 1, f"{job_id} ran {job['attempts']} counted attempts: {job}"
                    [delivery] = job["webhook"]["deliveries"]
                    assert delivery["status"] == "delivered", delivery
                    result = http.get(deployment.url(service, f"/v1/jobs/{job_id}/result"),
                                      params={"response_format": "text"})
                    assert result.status_code == 200, result.text
                    if job_id == long_job:  # dev00.wav four times over: a meeting's two minutes of words
                        assert len(result.text.split()) > 100, result.text
                    else:
                        assert "country" in result.text.lower(), result.text  # jfk.flac
            stored = http.get(deployment.url("whisper-faster", f"/v1/realtime/sessions/{session_id}"))
            assert stored.status_code == 200, stored.text
            body = stored.json()
            assert body["closed_at"] is not None and "country" in body["text"].lower(), body
        paths = receiver.paths()
        assert sorted(paths) == sorted(["/faster/long", "/faster/0", "/faster/1", "/x/0"]), paths
        ids = [webhook_id for _, webhook_id in receiver.deliveries()]
        assert len(set(ids)) == len(ids), f"a webhook was delivered twice: {receiver.deliveries()}"
        events = [e["event"] for e in proxy_events(deployment)]
        assert events.count("service held") == 2 and events.count("hold ended") == 2, events

        # 4. The store migrated to the new release's schema; the old release refuses it (rollback = the backup).
        new_versions = schema_versions(CONTAINERS["whisper-faster"])
        assert new_versions[:-1] == old_versions and new_versions[-1][1] == old_versions[-1][1] + 1, new_versions
        assert new_versions[-1][2].startswith("upgrade drill"), new_versions
        refused = open_with_image(old_release, CONTAINERS["whisper-faster"])
        assert refused.returncode != 0, refused.stdout + refused.stderr
        last = refused.stderr.strip().splitlines()[-1]
        assert "written by a newer release" in last and "restore a backup" in last, refused.stderr[-2000:]

        # 5. make up once more: nothing changes.
        before = container_ids(), proxy_pid(deployment)
        again = ok(deployment.make("up"))
        assert (container_ids(), proxy_pid(deployment)) == before, again.stdout[-3000:]
        assert "proxy: unchanged" in again.stdout and "nginx: no file changed, not reloaded" in again.stdout
        assert again.stdout.count("is up to date") == 2, again.stdout[-3000:]
        drill = time.monotonic() - started

        # 6. A re-run that fails after each step: the deployment keeps answering. The steps that hold a service need
        #    a container to re-create: newer images again before them.
        failures = time.monotonic()
        force = {"WHISPER_PROXY_RESTART": "1"}
        for step in FAIL_STEPS:
            if step == "held":
                new_images(tmp_path / "release-3", uuid.uuid4().hex[:8], migration=False)
            failed = deployment.make("up", env={**deployment.env(), **force, "WHISPER_UP_FAIL_AT": step})
            assert failed.returncode != 0, f"WHISPER_UP_FAIL_AT={step} did not fail: {failed.stdout[-2000:]}"
            assert f"failing after the step '{step}'" in failed.stderr, failed.stderr[-3000:]
            assert "removing what this run created" in failed.stderr
            assert_answering(deployment, step)
        assert_ok_after_failures(deployment, receiver)
        failures = time.monotonic() - failures
    print(f"\nupgrade drill: {drill:.0f} s (the switch under load {switch:.0f} s, {len(steady.outcomes)} requests, "
          f"none failed); the failed re-runs {failures:.0f} s")


def assert_ok_after_failures(deployment: Deployment, receiver: Receiver) -> None:
    """After the failed re-runs, a plain one completes, and a job with a webhook still goes through."""
    ok(deployment.make("up"))
    with deployment.client() as http:
        job = submit_job(http, deployment, "whisper-faster", webhook=receiver.url("/after"))
        [finished] = wait_for_jobs(http, deployment, "whisper-faster", {job}, 300, delivered=True).values()
        assert finished["status"] == "succeeded", finished
    assert receiver.paths().count("/after") == 1
