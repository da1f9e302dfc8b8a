"""Backup and restore of a DATA_DIR of 1,000 jobs: archive size, `make backup`'s time, `make restore`'s time, against
a plain `tar -czf` of the same folder (no consistency, no checksums: the floor).

    python -m bench.bench_backup [--jobs 1000] [--clip-seconds 2] [--repeat 3] [--no-docker]

The store is made with the store's own code (`SqliteStore`: submit, claim, finish; webhook deliveries for half of the
jobs) with small real audio files: 16 kHz FLAC clips cut from the fixtures, one per job. Then, for each path, the median
of `--repeat` runs:

- backup: `python -m whisper_common.backup dump` streamed into the archive writer of `make backup`
  (scripts/stack/backup.py `copy_part`, archive.py): the SQLite online backup, the referenced files, SHA-256 twice,
  gzip level 6, fsync and rename;
- restore: the whole archive read and checked (`verify`), then `stage` (files checked, databases opened with their
  schemas) and `commit` into an empty DATA_DIR;
- with a Docker Engine and the image (`make images`), both again through the whisper-faster image on Docker volumes,
  exactly as `make backup`/`make restore` run them (`docker run --volumes-from`-style helpers), with a `tar -czf` run
  in the same image as its baseline.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import soundfile

from bench.report import table, write_section
from whisper_common.backup.manifest import FORMAT, Manifest, Release, ServicePart, ServiceRecord
from whisper_common.jobs.files import JobFiles
from whisper_common.jobs.records import JobRow, JobStatus, new_job_id
from whisper_common.jobs.sqlite import SqliteStore
from whisper_common.jobs.store import Finish

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
from stack import service_data  # noqa: E402
from stack.archive import ArchiveWriter, members, verify  # noqa: E402
from stack.backup import copy_part  # noqa: E402
from stack.streams import Consumer  # noqa: E402

FIXTURES = ROOT.parent / "shared" / "fixtures" / "audio"
SOURCES = ("dev00.wav", "dev01.wav", "sample.wav")
SERVICE = service_data.BY_NAME["whisper-faster"]
RESULT_TEXT = " And so my fellow Americans, ask not what your country can do for you."


def clips(seconds: float) -> Callable[[int], bytes]:
    """Clip n: `seconds` of one of the fixtures as FLAC (what uploads mostly are: compressed audio), at an offset that
    depends on n (real speech, each file different)."""
    sources = [soundfile.read(FIXTURES / name, dtype="int16") for name in SOURCES]

    def clip(number: int) -> bytes:
        samples, rate = sources[number % len(sources)]
        length = int(seconds * rate)
        start = (number * 7919) % max(1, len(samples) - length)
        out = io.BytesIO()
        soundfile.write(out, samples[start:start + length], rate, format="FLAC", subtype="PCM_16")
        return out.getvalue()

    return clip


def synthesise(data_dir: Path, jobs: int, seconds: float) -> dict[str, int]:
    store = SqliteStore(data_dir / "jobs.sqlite3", SERVICE.queue)
    files = JobFiles(data_dir)
    clip = clips(seconds)
    counts = {"succeeded": 0, "queued": 0, "failed": 0}
    for number in range(jobs):
        job_id = new_job_id()
        upload = files.incoming / job_id
        upload.write_bytes(clip(number))
        now = time.time()
        store.insert(JobRow(id=job_id, queue=SERVICE.queue, status=JobStatus.QUEUED, created_at=now, run_after=now,
                            max_attempts=3, audio_file=files.adopt(job_id, upload),
                            webhook_url="https://hooks.example.com/done" if number % 2 else None))
        kind = "queued" if number % 20 == 0 else "failed" if number % 20 == 1 else "succeeded"
        counts[kind] += 1
        if kind == "queued":
            continue
        claimed = store.claim("bench", now, 60)
        assert claimed is not None
        segments = [{"id": i, "start": i * 0.5, "end": i * 0.5 + 0.5, "text": RESULT_TEXT} for i in range(4)]
        outcome = (Finish(JobStatus.SUCCEEDED, result=json.dumps({"text": RESULT_TEXT * 4, "segments": segments}))
                   if kind == "succeeded" else Finish(JobStatus.FAILED, error_message="undecodable", error_code="x"))
        store.finish(claimed.id, "bench", outcome, now)
    store.close()
    return counts


def folder_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def timed(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


# --- the two paths: local processes, or the image on Docker volumes ---------------------------------------------


def backup_with(command: list[str], folder: Path, on_failure: Callable[[], None] = lambda: None) -> Path:
    with ArchiveWriter(folder, "whisper-bench.tar.gz") as archive:
        part = copy_part(archive, SERVICE.name, command, on_failure)
        manifest = Manifest(format=FORMAT, created_at="bench", release=Release(commit="bench"), include=["data"],
                            files=dict(archive.files))
        manifest.services[SERVICE.name] = record(part)
        return archive.complete(manifest)


def record(part: ServicePart) -> ServiceRecord:
    return ServiceRecord(container=SERVICE.container, image="bench", part=part)


def restore_with(archive: Path, stage: list[str], commit: list[str]) -> None:
    manifest = verify(archive)
    part = manifest.services[SERVICE.name].part
    consumer = Consumer(stage, ("service.json", part.model_dump_json().encode()))
    for member, handle in members(archive):
        consumer.add(member.name.removeprefix(f"{SERVICE.name}/"), handle, member.size, member.mode, member.mtime)
    consumer.close()
    subprocess.run(commit, check=True, capture_output=True)


def local_module(command: str, data_dir: Path) -> list[str]:
    return [sys.executable, "-m", "whisper_common.backup", command, "--data-dir", str(data_dir),
            *SERVICE.store_args()]


def volume_source(volume: str, image: str) -> service_data.Source:
    return service_data.Source(SERVICE, image, ("--mount", f"type=volume,source={volume},target=/data"), "absent",
                               volume, False)


def docker_available(image: str) -> bool:
    return shutil.which("docker") is not None and subprocess.run(
        ["docker", "image", "inspect", image], capture_output=True).returncode == 0


def fill_volume(volume: str, image: str, data_dir: Path) -> None:
    tar = subprocess.Popen(["tar", "-cf", "-", "-C", str(data_dir), "."], stdout=subprocess.PIPE)
    subprocess.run(["docker", "run", "--rm", "-i", "--network", "none", "--user", "10001:10001", "--mount",
                    f"type=volume,source={volume},target=/data", "--entrypoint", "tar", image, "-xf", "-", "-C",
                    "/data"], stdin=tar.stdout, check=True, capture_output=True)
    tar.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--clip-seconds", type=float, default=2.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-docker", action="store_true")
    args = parser.parse_args()
    load_before = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="bench-backup-"))
    volumes: list[str] = []
    try:
        data_dir = work / "data"
        started = time.perf_counter()
        counts = synthesise(data_dir, args.jobs, args.clip_seconds)
        print(f"synthesised {args.jobs} jobs in {time.perf_counter() - started:.1f} s: {counts}", flush=True)
        data_bytes = folder_bytes(data_dir)
        audio_bytes = folder_bytes(data_dir / "jobs")
        results: dict[str, dict[str, list[float]]] = {}
        sizes: dict[str, int] = {}

        def note(path: str, step: str, seconds: float) -> None:
            results.setdefault(path, {}).setdefault(step, []).append(seconds)
            print(f"{path} {step}: {seconds:.2f} s", flush=True)

        def local_round(label: str, source: Path, run: int) -> None:
            folder = work / f"{label}-{run}"
            holder: list[Path] = []
            note(label, "backup", timed(lambda: holder.append(backup_with(local_module("dump", source), folder))))
            sizes[label] = holder[0].stat().st_size
            target = work / f"{label}-restored-{run}"
            target.mkdir()
            note(label, "restore", timed(lambda: restore_with(
                holder[0], local_module("stage", target), local_module("commit", target))))
            if (source / "jobs").is_dir():  # every file back
                assert folder_bytes(target / "jobs") == folder_bytes(source / "jobs")

        def docker_round(label: str, source: service_data.Source, run: int) -> None:
            folder = work / f"{label}-{run}"
            name = service_data.helper_name(SERVICE, f"{label.replace(' ', '-')}{run}")
            holder: list[Path] = []
            note(label, "backup", timed(lambda: holder.append(backup_with(
                service_data.helper_command(source, name, "dump", *SERVICE.store_args()), folder))))
            sizes[label] = holder[0].stat().st_size
            target_volume = volume(f"{label.replace(' ', '-')}-restore-{run}")
            target = volume_source(target_volume, image)
            note(label, "restore", timed(lambda: restore_with(
                holder[0],
                service_data.helper_command(target, f"{name}-stage", "stage", *SERVICE.store_args(), stdin=True),
                service_data.helper_command(target, f"{name}-commit", "commit"))))

        def volume(suffix: str) -> str:
            name = f"bench-backup-{os.getpid()}-{suffix}"
            volumes.append(name)
            subprocess.run(["docker", "volume", "create", name], check=True, capture_output=True)
            return name

        empty_dir = work / "empty"
        empty_dir.mkdir()
        image = SERVICE.image
        docker = not args.no_docker and docker_available(image)
        if docker:
            full_volume, empty_volume = volume("source"), volume("empty")
            fill_volume(full_volume, image, data_dir)
        for run in range(args.repeat):
            out = work / f"tar-{run}.tar.gz"
            note("tar", "backup", timed(lambda out=out: subprocess.run(
                ["tar", "-czf", str(out), "-C", str(data_dir), "."], check=True)))
            sizes["tar"] = out.stat().st_size
            target = work / f"tar-restored-{run}"
            target.mkdir()
            note("tar", "restore", timed(lambda out=out, target=target: subprocess.run(
                ["tar", "-xzf", str(out), "-C", str(target)], check=True)))
            local_round("local", data_dir, run)
            local_round("local empty", empty_dir, run)
            if docker:
                out = work / f"docker-tar-{run}.tar.gz"
                note("docker tar", "backup", timed(lambda out=out: out.write_bytes(subprocess.run(
                    ["docker", "run", "--rm", "--network", "none", "--user", "10001:10001",
                     *volume_source(full_volume, image).mount, "--entrypoint", "tar", image, "-czf", "-", "-C",
                     "/data", "."], check=True, capture_output=True).stdout)))
                docker_round("docker", volume_source(full_volume, image), run)
                docker_round("docker empty", volume_source(empty_volume, image), run)
    finally:
        for volume in volumes:
            subprocess.run(["docker", "volume", "rm", "-f", volume], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)
    load_after = os.getloadavg()

    def median(path: str, step: str) -> float:
        return statistics.median(results[path][step])

    def ratio(path: str, baseline: str) -> str:
        return f"{median(path, 'backup'):.2f} s ({median(path, 'backup') / median(baseline, 'backup'):.2f}x tar)"

    rows = [
        ["`tar -czf` of DATA_DIR on the host (baseline)", f"{sizes['tar'] / 1e6:.1f} MB",
         f"{median('tar', 'backup'):.2f} s", f"{median('tar', 'restore'):.2f} s (`tar -xzf`)"],
        ["backup / restore module, processes on the host (no Docker)", f"{sizes['local'] / 1e6:.1f} MB",
         ratio("local", "tar"), f"{median('local', 'restore'):.2f} s"],
        ["the same, DATA_DIR empty (the fixed cost: process starts, imports, fsync)", "",
         f"{median('local empty', 'backup'):.2f} s", f"{median('local empty', 'restore'):.2f} s"],
    ]
    if "docker" in results:
        rows += [
            ["`tar -czf` in the whisper-faster image over the volume (baseline)", "",
             f"{median('docker tar', 'backup'):.2f} s", ""],
            ["**make backup / make restore** as they run: helpers of the whisper-faster image on Docker volumes",
             f"{sizes['docker'] / 1e6:.1f} MB", ratio("docker", "docker tar"), f"{median('docker', 'restore'):.2f} s"],
            ["the same, volume empty (the fixed cost: containers, imports, fsync)", "",
             f"{median('docker empty', 'backup'):.2f} s", f"{median('docker empty', 'restore'):.2f} s"],
        ]
    measured = "docker" if "docker" in results else "local"
    measured_label = "through the image" if measured == "docker" else "processes on the host"
    body = (
        f"A DATA_DIR of {args.jobs:,} jobs made with the store's own code ({counts['succeeded']} succeeded with a "
        f"~1 KB result, {counts['failed']} failed, {counts['queued']} queued; webhook deliveries for half), each with a "
        f"{args.clip_seconds:g} s 16 kHz FLAC clip of the fixtures: {data_bytes / 1e6:.1f} MB in all, "
        f"{audio_bytes / 1e6:.1f} MB of it audio. Median of {args.repeat} runs; load average "
        f"{' / '.join(f'{x:.2f}' for x in load_before)} before, {' / '.join(f'{x:.2f}' for x in load_after)} after "
        "(a shared machine: noisy).\n\n"
        + table(["path", "archive", "backup", "restore (verify, stage, open, commit)"], rows)
        + f"\n\nThe empty rows are the fixed cost (starting the helpers, Python's imports, the fsync): "
        f"{median(f'{measured} empty', 'backup'):.2f} s of the {median(measured, 'backup'):.2f} s backup and "
        f"{median(f'{measured} empty', 'restore'):.2f} s of the {median(measured, 'restore'):.2f} s restore "
        f"({measured_label}). The rest is what a plain "
        "`tar` of the folder does not do: a consistent SQLite copy while the service writes (the online backup API), "
        "exactly the files the rows reference, a SHA-256 of every file (computed in the container and again on the "
        "host), and an fsync before the archive gets its name; the restore reads the archive twice (every checksum "
        "before anything is written, then the writing) and opens the databases with their schemas. The audio (FLAC, as "
        "uploads mostly are) does not compress: the archive is about the size of the data."
        + ("" if "docker" in results else "\n\nNo Docker Engine or image here: the path through the image was not "
           "measured.")
    )
    write_section("backup", f"Backup and restore: {args.jobs:,} jobs", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
