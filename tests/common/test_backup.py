"""whisper_common.backup without Docker: the part of `make backup`/`make restore` that runs inside a service's image,
run here on real stores (the jobs store's own code, real files in a DATA_DIR) and a real tmpfs for the full disk.

The backup of a store a writer keeps changing is consistent (every row's file is in it, no file without its row); a
file already gone is listed, not an error; the restore checks every file against the manifest, refuses a schema
newer than the code, a volume that holds data and one without the room, opens the databases with their schemas
before anything is replaced, and leaves DATA_DIR as it was whenever it refuses.
"""
from __future__ import annotations

import io
import json
import os
import sqlite3
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.support import ROOT
from whisper_common.backup import ArchiveDamaged, ArchiveTooNew, DataPresent, NotEnoughSpace, UnreadableDatabase
from whisper_common.backup import load
from whisper_common.backup.dump import dump
from whisper_common.backup.manifest import SERVICE_MANIFEST, SchemaVersion, ServicePart, sha256_of
from whisper_common.backup.stores import StoreSpec
from whisper_common.db import CorruptDatabase, open_database
from whisper_common.jobs.files import JobFiles
from whisper_common.jobs.records import JobRow, JobStatus, new_job_id
from whisper_common.jobs.schema import JOBS_SCHEMA
from whisper_common.jobs.sqlite import SqliteStore
from whisper_common.jobs.store import Finish
from whisper_common.owners import ANONYMOUS
from whisper_common.transcripts.model import SourceKind, build_doc
from whisper_common.transcripts.query import parse_query
from whisper_common.transcripts.schema import TRANSCRIPTS_SCHEMA
from whisper_common.transcripts.store import Search, TranscriptIndex
from whisper_common.usage.store import USAGE_SCHEMA, UsageRow, UsageStore
from whisper_faster.realtime.store import SESSIONS_SCHEMA, SqlSessionStore, StoredUtterance

JOBS = "jobs.sqlite3=whisper_common.jobs.schema:JOBS_SCHEMA"
REALTIME = "realtime.sqlite3=whisper_faster.realtime.store:SESSIONS_SCHEMA"
USAGE = "usage.sqlite3=whisper_common.usage.store:USAGE_SCHEMA"
TRANSCRIPTS = "transcripts.sqlite3=whisper_common.transcripts.schema:TRANSCRIPTS_SCHEMA"
JOBS_LATEST, SESSIONS_LATEST = JOBS_SCHEMA.latest, SESSIONS_SCHEMA.latest
QUEUE = "whisper_faster"


def specs() -> list[StoreSpec]:
    return [StoreSpec.parse(JOBS), StoreSpec.parse(USAGE), StoreSpec.parse(REALTIME), StoreSpec.parse(TRANSCRIPTS)]


def submit(store: SqliteStore, files: JobFiles, audio: bytes) -> JobRow:
    """What POST /v1/jobs does: the upload lands in .incoming, moves into its job's folder, then the row commits."""
    job_id = new_job_id()
    upload = files.incoming / f"upload-{job_id}"
    upload.write_bytes(audio)
    relative = files.adopt(job_id, upload)
    now = time.time()
    return store.insert(JobRow(id=job_id, queue=QUEUE, status=JobStatus.QUEUED, created_at=now, run_after=now,
                               max_attempts=3, audio_file=relative, webhook_url="http://hooks.example/done"))


def finish(store: SqliteStore, job: JobRow, text: str) -> None:
    claimed = store.claim("worker", time.time(), 60)
    assert claimed is not None and claimed.id == job.id
    store.finish(job.id, "worker", Finish(JobStatus.SUCCEEDED, result=json.dumps({"text": text})), time.time())


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    """A DATA_DIR as whisper-faster leaves it: jobs (two finished, one queued) with their audio, a live session."""
    data = tmp_path / "data"
    store = SqliteStore(data / "jobs.sqlite3", QUEUE)
    files = JobFiles(data)
    first = submit(store, files, b"RIFF first recording")
    finish(store, first, "first transcript")
    second = submit(store, files, b"RIFF second recording")
    finish(store, second, "second transcript")
    submit(store, files, b"RIFF queued recording")
    sessions = SqlSessionStore(open_database(data / "realtime.sqlite3", SESSIONS_SCHEMA))
    sessions.create("sess_1", "tiny.en")
    sessions.add_utterance("sess_1", StoredUtterance("item_1", 0.0, 1.5, "hello there"))
    sessions.close("sess_1", "tiny.en")
    sessions.shutdown()
    usage = UsageStore(open_database(data / "usage.sqlite3", USAGE_SCHEMA))
    usage.add(QUEUE, [UsageRow("2026-12-06", "team-a", "/v1/jobs", "tiny.en", 3, 33.0, 3)])
    usage.close()
    index = TranscriptIndex(open_database(data / "transcripts.sqlite3", TRANSCRIPTS_SCHEMA), QUEUE)
    index.add(build_doc(id=first.id, source=SourceKind.JOB, owner="", created_at=first.created_at,
                        ended_at=time.time(), model="tiny.en", language="en", duration=1.5,
                        segments=[(0.0, 1.5, None, "first transcript of the budget meeting")]))
    index.db.close()
    store.close()
    yield data


def take(data: Path, **kwargs: object) -> tuple[ServicePart, dict[str, bytes]]:
    out = io.BytesIO()
    part = dump(data, specs(), out, **kwargs)  # type: ignore[arg-type]
    out.seek(0)
    with tarfile.open(fileobj=out, mode="r|") as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}  # type: ignore[union-attr]
    assert ServicePart.model_validate_json(members.pop(SERVICE_MANIFEST)) == part
    return part, members


def stage_stream(part: ServicePart, members: dict[str, bytes], *, skip: str = "", change: str = "",
                 extra: dict[str, bytes] | None = None, cut: bool = False,
                 modes: dict[str, int] | None = None) -> io.BytesIO:
    """What `make restore` sends a service's container: service.json first, then the data members."""
    body = part.model_dump_json().encode()
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w|") as tar:
        entries = [(SERVICE_MANIFEST, body)] + [(n, d) for n, d in members.items() if n != skip]
        for name, data in entries + list((extra or {}).items()):
            if name == change:
                data = data[:-1] + bytes([data[-1] ^ 1])
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = (modes or {}).get(name, info.mode)
            tar.addfile(info, io.BytesIO(data))
    raw = out.getvalue()
    return io.BytesIO(raw[: len(raw) // 2] if cut else raw)


def tree(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def rows(database: Path, sql: str, params: tuple = ()) -> list[tuple]:
    with sqlite3.connect(database) as connection:
        return connection.execute(sql, params).fetchall()


# --- backup -----------------------------------------------------------------------------------------------------------


def test_the_archive_holds_each_store_its_schema_versions_and_exactly_the_files_its_rows_reference(data_dir: Path) -> None:
    stray = data_dir / "jobs" / "job_not_in_any_row"
    stray.mkdir()
    (stray / "audio").write_bytes(b"an orphan")
    (data_dir / "jobs" / ".incoming" / "half-an-upload").write_bytes(b"arriving")
    (data_dir / "voiceprints.sqlite3").write_bytes(b"a store of a newer release")

    part, members = take(data_dir)

    assert part.database == "sqlite"
    assert {(s.store, s.file, s.version, s.latest_known) for s in part.stores} == {
        ("jobs", "jobs.sqlite3", JOBS_LATEST, JOBS_LATEST), ("realtime", "realtime.sqlite3", SESSIONS_LATEST,
                                                             SESSIONS_LATEST),
        ("usage", "usage.sqlite3", USAGE_SCHEMA.latest, USAGE_SCHEMA.latest),
        ("transcripts", "transcripts.sqlite3", TRANSCRIPTS_SCHEMA.latest, TRANSCRIPTS_SCHEMA.latest)}
    assert next(s for s in part.stores if s.store == "transcripts").rows == {"transcripts": 1, "transcript_speakers": 0}
    assert next(s for s in part.stores if s.store == "usage").rows == {"usage_daily": 1}
    jobs = next(s for s in part.stores if s.store == "jobs")
    assert jobs.rows["jobs"] == 3 and jobs.rows["webhook_deliveries"] == 2
    audio = sorted(name for name in part.files if name.startswith("jobs/"))
    referenced = sorted(r[0] for r in rows(data_dir / "jobs.sqlite3", "SELECT audio_file FROM jobs"))
    assert audio == referenced  # not the orphan, not the upload still arriving
    assert part.missing == [] and part.not_backed_up == ["voiceprints.sqlite3"]
    assert set(members) == {f"data/{name}" for name in part.files}
    for name in audio:
        assert members[f"data/{name}"] == (data_dir / name).read_bytes()
    assert len(set(part.files[name].sha256 for name in audio)) == 3


def test_a_file_gone_since_its_row_was_written_is_listed_as_missing_not_an_error(data_dir: Path) -> None:
    gone = rows(data_dir / "jobs.sqlite3", "SELECT audio_file FROM jobs WHERE status = 'succeeded'")[0][0]
    (data_dir / gone).unlink()
    part, members = take(data_dir)
    assert part.missing == [gone]
    assert f"data/{gone}" not in members and len([n for n in part.files if n.startswith("jobs/")]) == 2


def test_the_snapshot_of_a_store_being_written_is_consistent_rows_with_files(tmp_path: Path) -> None:
    """A writer submits jobs as fast as it can while backups are taken: every job row in a snapshot has its audio in
    the archive, and the archive holds no audio without its row."""
    data = tmp_path / "data"
    store = SqliteStore(data / "jobs.sqlite3", QUEUE)
    files = JobFiles(data)
    stop = threading.Event()

    def writer() -> None:
        number = 0
        while not stop.is_set():
            submit(store, files, f"recording {number}".encode() * 50)
            number += 1

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        time.sleep(0.3)
        snapshots = []
        for _ in range(3):
            part, members = take(data)
            copy = tmp_path / f"snapshot-{len(snapshots)}.sqlite3"
            copy.write_bytes(members["data/jobs.sqlite3"])
            snapshots.append((part, members, copy))
            time.sleep(0.1)
    finally:
        stop.set()
        thread.join()
        store.close()
    counts = []
    for part, members, copy in snapshots:
        ids = {row[0] for row in rows(copy, "SELECT id FROM jobs")}
        audio = {name.split("/")[2] for name in members if name.startswith("data/jobs/")}
        assert part.missing == [] and ids == audio
        counts.append(len(ids))
    assert counts == sorted(counts) and counts[-1] > counts[0] > 0, counts  # the writer kept writing meanwhile
    assert rows(snapshots[0][2], "PRAGMA journal_mode") == [("delete",)]  # one self-contained file


def test_a_store_that_is_no_database_stops_the_backup_with_one_line(data_dir: Path) -> None:
    (data_dir / "jobs.sqlite3").write_bytes(b"this is not an SQLite file" * 100)
    for companion in ("-wal", "-shm"):
        (data_dir / f"jobs.sqlite3{companion}").unlink(missing_ok=True)
    with pytest.raises(UnreadableDatabase, match=r"jobs.sqlite3 cannot be read as an SQLite database"):
        take(data_dir)


def test_with_postgresql_every_job_file_is_archived_and_no_database(data_dir: Path) -> None:
    part, members = take(data_dir, postgres=True)
    assert part.database == "postgresql" and part.stores == []
    assert sorted(part.files) == sorted(name for name in tree(data_dir) if name.startswith("jobs/job_"))
    assert "jobs.sqlite3" in part.not_backed_up


# --- restore ----------------------------------------------------------------------------------------------------------


def test_a_restore_into_an_empty_volume_gives_back_the_same_rows_and_bytes(data_dir: Path, tmp_path: Path) -> None:
    part, members = take(data_dir)
    target = tmp_path / "restored"
    target.mkdir()
    (target / "jobs" / ".incoming").mkdir(parents=True)  # the skeleton a service leaves: not data
    staged, warnings = load.stage(target, specs(), stage_stream(part, members), replace=False,
                                  params={"queue": QUEUE})
    assert warnings == [] and staged == part
    assert sorted(tree(target)) == sorted(f"{load.STAGING}/{name}" for name in part.files)  # staged, not in place
    load.commit(target, replace=False)
    for name in part.files:
        if name.startswith("jobs/"):
            assert (target / name).read_bytes() == (data_dir / name).read_bytes()
    query = "SELECT id, status, result, audio_file FROM jobs ORDER BY id"
    assert rows(target / "jobs.sqlite3", query) == rows(data_dir / "jobs.sqlite3", query)
    deliveries = "SELECT id, job_id, status FROM webhook_deliveries ORDER BY id"
    assert rows(target / "jobs.sqlite3", deliveries) == rows(data_dir / "jobs.sqlite3", deliveries)
    restored = SqlSessionStore(open_database(target / "realtime.sqlite3", SESSIONS_SCHEMA)).get("sess_1", ANONYMOUS)
    assert restored is not None and restored.utterances[0].text == "hello there"
    index = TranscriptIndex(open_database(target / "transcripts.sqlite3", TRANSCRIPTS_SCHEMA), QUEUE)
    hits, _ = index.search(ANONYMOUS, Search(terms=parse_query("budget")), {})  # searchable as it was
    assert [hit.matches[0].snippet for hit in hits] == ["first transcript of the budget meeting"]
    assert rows(target / "jobs.sqlite3", "SELECT status FROM jobs WHERE id = ?", (hits[0].doc.id,)) == [("succeeded",)]
    index.db.close()
    assert not (target / load.STAGING).exists() and not (target / load.REPLACED).exists()


def test_the_api_keys_file_in_the_volume_is_archived_when_named_and_restored_with_its_mode(data_dir: Path,
                                                                                       tmp_path: Path) -> None:
    """`make backup` names API_KEYS_FILE (`--file`) when it lies in /data: a restore gives back working keys."""
    keys = data_dir / "api-keys.json"
    keys.write_text('{"keys": [{"name": "team-a", "sha256": "ab"}]}')
    keys.chmod(0o600)
    unnamed, _ = take(data_dir)
    assert "api-keys.json" not in unnamed.files and unnamed.not_backed_up == ["api-keys.json"]

    part, members = take(data_dir, files=["api-keys.json"])
    assert part.not_backed_up == [] and members["data/api-keys.json"] == keys.read_bytes()
    assert part.files["api-keys.json"] == sha256_of(keys.read_bytes())
    target = tmp_path / "restored"
    target.mkdir()
    load.stage(target, specs(), stage_stream(part, members, modes={"data/api-keys.json": 0o600}), replace=False,
               params={"queue": QUEUE})
    load.commit(target, replace=False)
    assert (target / "api-keys.json").read_bytes() == keys.read_bytes()
    assert (target / "api-keys.json").stat().st_mode & 0o777 == 0o600


def test_the_dump_command_refuses_a_file_outside_the_volume_in_one_line(data_dir: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "whisper_common.backup", "dump", "--data-dir", str(data_dir),
                             "--store", JOBS, "--file", "../etc/passwd"], capture_output=True, cwd=ROOT, timeout=60)
    assert result.returncode == 1 and result.stdout == b""
    assert result.stderr.decode().strip().splitlines() == ["--file '../etc/passwd': give a path relative to DATA_DIR, "
                                                           "inside it"]


def test_a_volume_that_holds_data_is_refused_unless_replace_and_then_replaced_whole(data_dir: Path,
                                                                                    tmp_path: Path) -> None:
    part, members = take(data_dir)
    target = tmp_path / "busy"
    store = SqliteStore(target / "jobs.sqlite3", QUEUE)
    submit(store, JobFiles(target), b"someone else's recording")
    store.close()
    before = tree(target)
    with pytest.raises(DataPresent, match=r"already holds data \(jobs/, jobs.sqlite3\).*REPLACE=1"):
        load.stage(target, specs(), stage_stream(part, members), replace=False)
    assert tree(target) == before
    load.stage(target, specs(), stage_stream(part, members), replace=True, params={"queue": QUEUE})
    assert {k: v for k, v in tree(target).items() if not k.startswith(load.STAGING)} == before  # untouched until commit
    replaced = load.commit(target, replace=True)
    assert replaced == ["jobs/", "jobs.sqlite3"]
    assert rows(target / "jobs.sqlite3", "SELECT COUNT(*) FROM jobs") == [(3,)]
    assert sorted(p for p in tree(target) if p.startswith("jobs/")) == sorted(
        n for n in part.files if n.startswith("jobs/"))


@pytest.mark.parametrize("damage", ["changed", "missing", "extra", "cut", "unsafe"])
def test_a_damaged_part_is_refused_and_the_volume_left_as_it_was(data_dir: Path, tmp_path: Path, damage: str) -> None:
    part, members = take(data_dir)
    audio = next(name for name in members if name.startswith("data/jobs/"))
    stream = {
        "changed": lambda: stage_stream(part, members, change=audio),
        "missing": lambda: stage_stream(part, members, skip=audio),
        "extra": lambda: stage_stream(part, members, extra={"data/jobs/job_x/audio": b"smuggled"}),
        "cut": lambda: stage_stream(part, members, cut=True),
        "unsafe": lambda: stage_stream(part, members, extra={"data/../../etc/passwd": b"root::0:0"}),
    }[damage]()
    target = tmp_path / "restored"
    target.mkdir()
    message = {"changed": "does not match its checksum", "missing": "not in the archive", "extra": "does not list",
               "cut": "damaged or cut short", "unsafe": "unsafe path"}[damage]
    with pytest.raises(ArchiveDamaged, match=message):
        load.stage(target, specs(), stream, replace=False)
    assert tree(target) == {} and list(target.iterdir()) == []


def test_a_schema_newer_than_the_code_is_refused_and_an_additive_one_accepted(data_dir: Path, tmp_path: Path) -> None:
    part, members = take(data_dir)
    jobs = next(s for s in part.stores if s.store == "jobs")
    jobs.versions.append(SchemaVersion(version=JOBS_LATEST + 1, additive=True))
    empty = tmp_path / "empty"
    empty.mkdir()
    assert load.check(empty, part, specs(), replace=False) == [
        f"the archive's jobs schema is newer than this release by additive versions only ({JOBS_LATEST + 1}): this "
        "release runs on it"]
    jobs.versions.append(SchemaVersion(version=JOBS_LATEST + 2, additive=False))
    with pytest.raises(ArchiveTooNew, match=rf"jobs schema \(jobs.sqlite3\) is at version {JOBS_LATEST + 2}, written "
                                            rf"by a newer release \(commit abc123\); this release knows versions up to "
                                            rf"{JOBS_LATEST} "):
        load.check(empty, part, specs(), replace=False, release="abc123")
    target = tmp_path / "restored"
    target.mkdir()
    with pytest.raises(ArchiveTooNew):
        load.stage(target, specs(), stage_stream(part, members), replace=False)
    assert list(target.iterdir()) == []


def test_a_restored_database_that_does_not_open_is_refused_before_anything_is_replaced(data_dir: Path,
                                                                                      tmp_path: Path) -> None:
    """The checksums match (the archive holds the file as it was read, from a damaged disk) but the file is no
    database: open_database refuses it while staging, and DATA_DIR is left as it was."""
    part, members = take(data_dir)
    garbage = b"garbage in, garbage out " * 200
    members["data/realtime.sqlite3"] = garbage
    part.files["realtime.sqlite3"] = sha256_of(garbage)
    target = tmp_path / "restored"
    target.mkdir()
    with pytest.raises(CorruptDatabase, match="realtime.sqlite3 is not a usable SQLite database"):
        load.stage(target, specs(), stage_stream(part, members), replace=False, params={"queue": QUEUE})
    assert list(target.iterdir()) == []


@contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def test_a_volume_without_the_room_is_refused_before_a_byte_is_written(tmp_path: Path) -> None:
    data = tmp_path / "data"
    store = SqliteStore(data / "jobs.sqlite3", QUEUE)
    files = JobFiles(data)
    for _ in range(3):
        submit(store, files, os.urandom(3 << 20))
    store.close()
    part, members = take(data)
    with tmpfs(tmp_path / "small", "8m") as small:
        with pytest.raises(NotEnoughSpace, match=r"has \d+\.\d MB free and the archive's data needs"):
            load.stage(small, specs(), stage_stream(part, members), replace=False)
        assert list(small.iterdir()) == []


def test_a_disk_that_fills_while_staging_leaves_the_volume_as_it_was(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Another writer takes the room between the free-space check and the writing (simulated by letting the check
    pass on a disk that is already full): ENOSPC mid-file removes the staging folder, the rest stays."""
    data = tmp_path / "data"
    store = SqliteStore(data / "jobs.sqlite3", QUEUE)
    submit(store, JobFiles(data), os.urandom(6 << 20))
    store.close()
    part, members = take(data)
    with tmpfs(tmp_path / "small", "24m") as small:
        (small / "notes.txt").write_text("kept")
        (small / "filler").write_bytes(os.urandom(20 << 20))
        monkeypatch.setattr(load, "check", lambda *args, **kwargs: [])
        with pytest.raises(NotEnoughSpace, match="ran out of space"):
            load.stage(small, specs(), stage_stream(part, members), replace=True)
        assert sorted(p.name for p in small.iterdir()) == ["filler", "notes.txt"]


def test_the_command_line_refuses_in_one_line_with_status_1(data_dir: Path, tmp_path: Path) -> None:
    part, _ = take(data_dir)
    next(s for s in part.stores if s.store == "jobs").versions.append(SchemaVersion(version=9, additive=False))
    command = [sys.executable, "-m", "whisper_common.backup", "check", "--data-dir", str(tmp_path), "--store", JOBS,
               "--store", REALTIME, "--release", "f00dfeed"]
    result = subprocess.run(command, input=part.model_dump_json().encode(), capture_output=True, cwd=ROOT, timeout=60)
    assert result.returncode == 1
    lines = result.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and "at version 9, written by a newer release (commit f00dfeed)" in lines[0], lines
    result = subprocess.run([*command[:-4], "--store", JOBS], input=b"{not json", capture_output=True, cwd=ROOT,
                            timeout=60)
    assert result.returncode == 1 and b"not valid" in result.stderr and b"Traceback" not in result.stderr


def test_a_store_this_image_does_not_have_is_left_out_of_the_dump_and_refused_by_the_restore(data_dir: Path,
                                                                                           tmp_path: Path) -> None:
    """The host's checkout may name a store an older image lacks: that image has none of its files, so the dump
    leaves it out with a note; an archive holding a store the image lacks is refused (a newer release wrote it)."""
    command = [sys.executable, "-m", "whisper_common.backup", "dump", "--data-dir", str(data_dir), "--store", JOBS,
               "--store", "voiceprints.sqlite3=whisper_common.voiceprints_of_a_later_release:SCHEMA"]
    result = subprocess.run(command, capture_output=True, cwd=ROOT, timeout=60)
    assert result.returncode == 0, result.stderr
    assert b"note: voiceprints.sqlite3: this image has no whisper_common.voiceprints_of_a_later_release; left out" \
        in result.stderr
    with tarfile.open(fileobj=io.BytesIO(result.stdout), mode="r|") as tar:
        names = [member.name for member in tar]
    assert "data/jobs.sqlite3" in names and names[-1] == SERVICE_MANIFEST
    part, _ = take(data_dir)
    jobs_only = [StoreSpec.parse(JOBS)]
    with pytest.raises(ArchiveTooNew, match="holds a 'usage' store"):
        load.check(tmp_path, part, jobs_only, replace=False)
