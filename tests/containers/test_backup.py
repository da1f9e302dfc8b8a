"""`make backup` and `make restore` against the real Docker deployment (`make up` with the host's Nginx, see
deployment.py), the real images and real jobs through Nginx.

The drill: jobs finish (some announced by webhooks to a receiver on this host), more are queued, `make backup` runs
while further jobs keep arriving; `make down`, the data volumes removed, `make restore`, `make up`: every job that had
finished at backup time returns a byte-identical result, the ones queued then run, and no webhook delivered before the
backup is sent again.

The refusals, each one line, a non-zero exit and the data untouched: a full disk during the backup (a 1 MiB tmpfs as
BACKUP_DIR, an older archive in it), a restore onto a running deployment, a truncated archive, an archive of a newer
release, volumes and host files that already hold other data (then REPLACE=1 replaces them).
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import shutil
import sqlite3
import subprocess
import tarfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.containers.conftest import BuiltImages
from tests.containers.deployment import (
    FINISHED, HOSTS, Deployment, host_address, require_stock_nginx, webhook_receiver,
)
from tests.containers.docker_cli import CONTAINERS, docker, inspect, running
from tests.stack.harness import require_nginx
from tests.support import ROOT, fixture_path

pytestmark = [pytest.mark.docker, pytest.mark.stack]

# --- the deployment ---------------------------------------------------------------------------------------------------


@pytest.fixture
def deployment(tmp_path: Path, built_images: BuiltImages) -> Iterator[Deployment]:
    require_nginx()
    require_stock_nginx()
    for container in CONTAINERS.values():
        if inspect(container) is not None:
            pytest.fail(f"a container named {container} exists already (a deployment on this engine?): not touching it")
    deployment = Deployment(tmp_path)
    # Leases short enough that a job running at backup time is taken up again soon after the restore; no rate limit
    # for the test's polling.
    deployment.extra_env = {"JOB_LEASE_SECONDS": "15", "JOB_RETRY_SECONDS": "2", "NGINX_RATE_LIMIT": "0"}
    try:
        yield deployment
    finally:
        deployment.cleanup(deployment.projects() or {"whisper-faster", "whisperfaster", "whisperx"})


def make(deployment: Deployment, target: str, **env: str) -> subprocess.CompletedProcess[str]:
    return deployment.make(target, env={**deployment.env(), **env})


def ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-5000:]
    return result


def refused(result: subprocess.CompletedProcess[str], *expected: str) -> str:
    """Non-zero, and the reason is one line `make backup: …` or `make restore: …` (make adds its own `Error 1`)."""
    assert result.returncode != 0, result.stdout[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    reasons = [line for line in result.stderr.splitlines() if line.startswith(("make backup: ", "make restore: "))]
    assert len(reasons) == 1, result.stderr[-3000:]
    line = reasons[0]
    for text in expected:
        assert text in line, result.stderr[-3000:]
    return line


def submit(http: httpx.Client, deployment: Deployment, service: str, audio: str = "jfk.flac",
           webhook: str | None = None) -> str:
    data = {"webhook_url": webhook} if webhook else {}
    with fixture_path(audio).open("rb") as handle:
        answer = http.post(deployment.url(service, "/v1/jobs"), files={"file": (audio, handle)}, data=data)
    assert answer.status_code == 202, answer.text
    return str(answer.json()["id"])


def jobs(http: httpx.Client, deployment: Deployment, service: str) -> dict[str, dict]:
    found: dict[str, dict] = {}
    after = None
    while True:
        params = {"limit": "100", **({"after": after} if after else {})}
        page = http.get(deployment.url(service, "/v1/jobs"), params=params)
        assert page.status_code == 200, page.text
        body = page.json()
        found.update({job["id"]: job for job in body["data"]})
        if not body["has_more"]:
            return found
        after = body["last_id"]


def wait_for_jobs(http: httpx.Client, deployment: Deployment, service: str, ids: set[str], timeout: float,
                  done: set[str] = FINISHED, delivered: bool = False) -> dict[str, dict]:
    deadline = time.monotonic() + timeout
    while True:
        current = {job_id: job for job_id, job in jobs(http, deployment, service).items() if job_id in ids}
        settled = [job for job in current.values() if job["status"] in done
                   and (not delivered or all(d["status"] == "delivered" for d in job["webhook"]["deliveries"]))]
        if len(current) == len(ids) and len(settled) == len(ids):
            return current
        if time.monotonic() > deadline:
            raise AssertionError(f"{service} jobs not settled in {timeout:.0f} s: "
                                 f"{ {k: (v['status'], v['webhook']['deliveries']) for k, v in current.items()} }")
        time.sleep(2)


def result(http: httpx.Client, deployment: Deployment, service: str, job_id: str, fmt: str = "") -> bytes:
    params = {"response_format": fmt} if fmt else {}
    answer = http.get(deployment.url(service, f"/v1/jobs/{job_id}/result"), params=params)
    assert answer.status_code == 200, answer.text
    return answer.content


def archives(folder: Path) -> list[Path]:
    return sorted(folder.glob("whisper-*.tar.gz"))


def read_archive(path: Path, tmp: Path) -> tuple[dict, dict[str, Path]]:
    """The manifest, and each service's jobs.sqlite3 snapshot extracted to look at its rows."""
    databases = {}
    with tarfile.open(path, "r:gz") as tar:
        manifest = json.loads(tar.extractfile("manifest.json").read())  # type: ignore[union-attr]
        for service in manifest["services"]:
            target = tmp / f"{service}-jobs.sqlite3"
            target.write_bytes(tar.extractfile(f"{service}/data/jobs.sqlite3").read())  # type: ignore[union-attr]
            databases[service] = target
    return manifest, databases


def rows(database: Path, sql: str) -> list[tuple]:
    with sqlite3.connect(database) as connection:
        return connection.execute(sql).fetchall()


def volume_digest(volume: str) -> dict[str, str]:
    """Every file of a data volume with its SHA-256, read through the service image without writing anything."""
    script = ("import hashlib, json, os\nfound = {}\nfor root, _, files in os.walk('/data'):\n    for name in files:\n"
              "        path = os.path.join(root, name)\n"
              "        found[os.path.relpath(path, '/data')] = hashlib.sha256(open(path, 'rb').read()).hexdigest()\n"
              "print(json.dumps(found))")
    out = docker("run", "--rm", "--network", "none", "--user", "10001", "-v", f"{volume}:/data:ro",
                 "--entrypoint", "python", "whisper-platform/whisper-faster:latest", "-c", script).stdout
    return json.loads(out)


def data_volumes(deployment: Deployment) -> dict[str, str]:
    found = {}
    for service, container in CONTAINERS.items():
        info = inspect(container)
        assert info is not None, container
        found[service] = next(m["Name"] for m in info["Mounts"] if m["Destination"] == "/data")
    return found


# --- the drill --------------------------------------------------------------------------------------------------------


@pytest.mark.timeout(3600)
def test_backup_drill_while_jobs_arrive_then_restore_onto_empty_volumes(deployment: Deployment,
                                                                        tmp_path: Path) -> None:
    address = host_address()
    if address is None:
        pytest.skip("no host address outside Docker's bridges for the webhook receiver")
    deployment.extra_env["OUTBOUND_ALLOWLIST"] = address
    backups = tmp_path / "backups"
    with webhook_receiver(address) as receiver:
        ok(deployment.make("up"))
        with deployment.client() as http:

            # 1. Jobs that finish, each announced to the receiver; both services.
            hooked = {submit(http, deployment, "whisper-faster", webhook=receiver.url(f"/before/{n}")):
                      "whisper-faster" for n in range(3)}
            hooked[submit(http, deployment, "whisperx", webhook=receiver.url("/before/x"))] = "whisperx"
            for service in ("whisper-faster", "whisperx"):
                ids = {job_id for job_id, owner in hooked.items() if owner == service}
                wait_for_jobs(http, deployment, service, ids, 600, done={"succeeded"}, delivered=True)
            assert sorted(receiver.paths()) == ["/before/0", "/before/1", "/before/2", "/before/x"]
            results = {job_id: {fmt: result(http, deployment, service, job_id, fmt) for fmt in ("", "srt")}
                       for job_id, service in hooked.items()}

            # 2. Work still queued when the backup is taken: a minute of speech each, one worker.
            queued = {submit(http, deployment, "whisper-faster", audio="dev00.wav") for _ in range(4)}

        # 3. make backup while more jobs arrive.
        arriving: list[tuple[str, float]] = []
        stop = threading.Event()

        def keep_submitting() -> None:
            with deployment.client() as client:
                while not stop.is_set():
                    arriving.append((submit(client, deployment, "whisper-faster"), time.monotonic()))
                    time.sleep(0.3)

        submitter = threading.Thread(target=keep_submitting)
        submitter.start()
        time.sleep(1)
        started = time.monotonic()
        try:
            backup = ok(make(deployment, "backup", BACKUP_DIR=str(backups)))
        finally:
            ended = time.monotonic()
            stop.set()
            submitter.join()
        during = [job_id for job_id, at in arriving if started <= at <= ended]
        assert during, "no job was submitted while make backup ran"

        [archive] = archives(backups)
        assert not list(backups.glob(".*")), "a temporary file was left in BACKUP_DIR"
        assert archive.stat().st_mode & 0o777 == 0o600
        assert archive.name in backup.stdout, backup.stdout
        manifest, snapshots = read_archive(archive, tmp_path)
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
        assert manifest["release"]["commit"] == head and manifest["format"] == 1
        assert manifest["include"] == ["data", "config", "credentials", "certificates"]
        # (No credentials store: the test gives make up its password, so none is generated.)
        assert {h["relative"] for h in manifest["host"].values()} >= {"whisper.htpasswd", "autostart.json",
                                                                      f"whisper-selfsigned/{HOSTS['whisper-faster']}.key"}
        print(backup.stdout)
        for service, record in manifest["services"].items():
            stores = {s["store"]: s for s in record["part"]["stores"]}
            jobs_store = stores["jobs"]
            assert [v["version"] for v in jobs_store["versions"]] == list(range(1, jobs_store["latest_known"] + 1))
            assert record["image_revision"], record
        assert "realtime" in {s["store"] for s in manifest["services"]["whisper-faster"]["part"]["stores"]}
        faster = dict(rows(snapshots["whisper-faster"], "SELECT id, status FROM jobs"))
        snapshot = faster | dict(rows(snapshots["whisperx"], "SELECT id, status FROM jobs"))
        assert all(snapshot[job_id] == "succeeded" for job_id in hooked), snapshot
        delivered = rows(snapshots["whisper-faster"], "SELECT status FROM webhook_deliveries")
        assert delivered and {status for (status,) in delivered} == {"delivered"}
        waiting = {job_id for job_id, status in faster.items() if status in ("queued", "running")}
        assert waiting & queued, f"no job was still queued or running in the snapshot: {snapshot}"
        # Each row's audio is in the archive, and no audio without its row.
        in_archive = {name.split("/")[3] for name in manifest["files"] if name.startswith("whisper-faster/data/jobs/")}
        assert in_archive == set(faster)
        lost = [job_id for job_id in during if job_id not in snapshot]

        # 4. make down, the data volumes gone, make restore onto new ones, make up.
        volumes = data_volumes(deployment)
        ok(deployment.make("down"))
        for volume in volumes.values():
            docker("volume", "rm", volume)
        restore = ok(make(deployment, "restore", ARCHIVE=str(archive)))
        assert "restored:" in restore.stdout and "make up" in restore.stdout, restore.stdout
        assert {c: (inspect(c) or {}).get("State", {}).get("Status") for c in CONTAINERS.values()} == {
            c: "created" for c in CONTAINERS.values()}

        with deployment.client() as http:
            ok(deployment.make("up"))
            for job_id, service in hooked.items():
                for fmt, body in results[job_id].items():
                    assert result(http, deployment, service, job_id, fmt) == body, (job_id, fmt)
            wait_for_jobs(http, deployment, "whisper-faster", waiting, 900, done={"succeeded"})
            for job_id in lost:
                assert http.get(deployment.url("whisper-faster", f"/v1/jobs/{job_id}")).status_code == 404
            # The webhook path works after the restore (a new job's delivery arrives on the same receiver), and none
            # of the deliveries made before the backup comes again.
            probe = submit(http, deployment, "whisper-faster", webhook=receiver.url("/after"))
            wait_for_jobs(http, deployment, "whisper-faster", {probe}, 600, done={"succeeded"}, delivered=True)
            time.sleep(5)
            assert sorted(receiver.paths()) == ["/after", "/before/0", "/before/1", "/before/2", "/before/x"]
            for job_id, service in hooked.items():
                job = http.get(deployment.url(service, f"/v1/jobs/{job_id}")).json()
                [delivery] = job["webhook"]["deliveries"]
                assert delivery["status"] == "delivered" and len(delivery["attempts"]) == 1, job


# --- refusals -----------------------------------------------------------------------------------------------------


@contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def rewritten(archive: Path, target: Path, change, recompute: bool = True) -> Path:  # noqa: ANN001
    """A copy of an archive with its members and manifest changed by `change(manifest, members)`; the checksums of
    the changed members are written into the manifest unless `recompute` is false."""
    with tarfile.open(archive, "r:gz") as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]
    manifest = json.loads(members.pop("manifest.json"))
    change(manifest, members)
    for name, data in members.items():
        if recompute:
            manifest["files"][name] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    with tarfile.open(target, "w:gz") as tar:
        for name, data in [*members.items(), ("manifest.json", json.dumps(manifest).encode())]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return target


def newer_release(scratch: Path, manifest: dict, members: dict[str, bytes]) -> None:
    """What the next release, with a non-additive jobs migration, would have written."""
    part = manifest["services"]["whisper-faster"]["part"]
    jobs_store = next(s for s in part["stores"] if s["store"] == "jobs")
    newer = jobs_store["latest_known"] + 1
    scratch.write_bytes(members["whisper-faster/data/jobs.sqlite3"])
    with sqlite3.connect(scratch) as connection:
        connection.execute("INSERT INTO whisper_schema_versions (store, version, name, additive, applied_at) VALUES "
                           "('jobs', ?, 'a column old code cannot fill', 0, 0)", (newer,))
    members["whisper-faster/data/jobs.sqlite3"] = scratch.read_bytes()
    scratch.unlink()
    part["files"]["jobs.sqlite3"] = {"size": len(members["whisper-faster/data/jobs.sqlite3"]),
                                     "sha256": hashlib.sha256(members["whisper-faster/data/jobs.sqlite3"]).hexdigest()}
    jobs_store["versions"].append({"version": newer, "additive": False})
    manifest["release"]["commit"] = "f" * 40


@pytest.mark.timeout(3600)
def test_each_refusal_is_one_line_a_non_zero_exit_and_the_data_untouched(deployment: Deployment,
                                                                         tmp_path: Path) -> None:
    backups = tmp_path / "backups"
    ok(deployment.make("up"))
    with deployment.client() as http:
        kept = {submit(http, deployment, "whisper-faster") for _ in range(2)}
        wait_for_jobs(http, deployment, "whisper-faster", kept, 600, done={"succeeded"})

        # A full disk during the backup: a 1 MiB BACKUP_DIR that holds an older (small) archive.
        with tmpfs(tmp_path / "small", "1m") as small:
            ok(make(deployment, "backup", BACKUP_DIR=str(small), BACKUP_INCLUDE="config,credentials,certificates"))
            [older] = archives(small)
            older_digest = sha256(older)
            full = make(deployment, "backup", BACKUP_DIR=str(small))
            refused(full, "no space left in", "the unfinished archive was removed; older archives are untouched")
            assert sorted(p.name for p in small.iterdir()) == [older.name]  # no half archive, no temporary file
            assert sha256(older) == older_digest

        ok(make(deployment, "backup", BACKUP_DIR=str(backups)))
        [archive] = archives(backups)
        later = submit(http, deployment, "whisper-faster")  # after the backup: REPLACE=1 must take it away
        wait_for_jobs(http, deployment, "whisper-faster", {later}, 600, done={"succeeded"})

        # A restore onto the running deployment.
        volumes = data_volumes(deployment)
        line = refused(make(deployment, "restore", ARCHIVE=str(archive)), "make down first")
        assert "auto-start proxy" in line or "is running" in line

    ok(deployment.make("down"))
    before = {service: volume_digest(volume) for service, volume in volumes.items()}
    assert any(name.startswith("jobs/job_") for name in before["whisper-faster"])

    def untouched() -> None:
        assert {service: volume_digest(volume) for service, volume in volumes.items()} == before
        assert not any(running(container) for container in CONTAINERS.values())

    # A truncated archive, and one whose file differs from its checksum.
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(archive.read_bytes()[: archive.stat().st_size * 2 // 3])
    refused(make(deployment, "restore", ARCHIVE=str(cut)), "is damaged or cut short", "nothing was restored")
    untouched()
    with tarfile.open(archive, "r:gz") as tar:
        audio = next(m.name for m in tar.getmembers() if m.name.startswith("whisper-faster/data/jobs/"))

    def flip(manifest: dict, members: dict[str, bytes]) -> None:
        members[audio] = members[audio][:-1] + bytes([members[audio][-1] ^ 1])

    damaged = rewritten(archive, tmp_path / "damaged.tar.gz", flip, recompute=False)
    refused(make(deployment, "restore", ARCHIVE=str(damaged)), f"{audio} in the archive does not match its checksum")
    untouched()

    # An archive of a newer release: its jobs schema is at a version this release does not know.
    newer = rewritten(archive, tmp_path / "newer.tar.gz", functools.partial(newer_release, tmp_path / "newer.sqlite3"))
    with tarfile.open(archive, "r:gz") as tar:
        manifest = json.loads(tar.extractfile("manifest.json").read())  # type: ignore[union-attr]
    latest = next(s for s in manifest["services"]["whisper-faster"]["part"]["stores"] if s["store"] == "jobs")
    refused(make(deployment, "restore", ARCHIVE=str(newer)), "written by a newer release (commit ffffffffffff)",
            f"knows versions up to {latest['latest_known']} and cannot run on version {latest['latest_known'] + 1}")
    untouched()

    # Host files with other content than the archive's, then volumes that hold data: refused unless REPLACE=1.
    config = deployment.root / "etc" / "autostart.json"
    original_config = config.read_bytes()
    config.write_text('{"edited": "since the backup"}\n')
    refused(make(deployment, "restore", ARCHIVE=str(archive)), f"{config}", "REPLACE=1")
    assert config.read_text() == '{"edited": "since the backup"}\n'
    config.write_bytes(original_config)
    refused(make(deployment, "restore", ARCHIVE=str(archive)), "already holds data", "REPLACE=1")
    untouched()

    # REPLACE=1: the archive's data replaces the volumes'; the job of after the backup is gone, the others are back.
    ok(make(deployment, "restore", ARCHIVE=str(archive), REPLACE="1"))
    assert before["whisper-faster"] != volume_digest(volumes["whisper-faster"])
    with deployment.client() as http:
        ok(deployment.make("up"))
        for job_id in kept:
            assert http.get(deployment.url("whisper-faster", f"/v1/jobs/{job_id}")).json()["status"] == "succeeded"
        assert http.get(deployment.url("whisper-faster", f"/v1/jobs/{later}")).status_code == 404
    shutil.rmtree(backups)
