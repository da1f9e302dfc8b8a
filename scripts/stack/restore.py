"""`make restore ARCHIVE=…`: an archive of `make backup` back onto this host, verified by the restore itself.

    PYTHONPATH=scripts python -m stack.restore ARCHIVE [--replace] [--include data,config,...]

In order, and nothing is written before the last check has passed:
1. the deployment must be down (no service container running, no auto-start proxy): "make down first";
2. the archive is read completely and every member checked against the manifest's SHA-256 (archive.py `verify`);
   a truncated or damaged archive, or one of a newer archive format, stops here;
3. host files that exist with other content than the archive's are refused unless REPLACE=1;
4. the images are built when missing and the service containers created, stopped, when they do not exist (as
   `make up` step 2 does), to get their volumes;
5. each service's image checks its part (`python -m whisper_common.backup check`): a schema newer than this release
   knows, a data volume that already holds data (unless REPLACE=1), a volume with less free space than the data;
6. the archive is read a second time and written: each service's files into `.restore-staging` in its volume (checked
   file by file, the databases opened with their schemas), the host files beside their targets under temporary names;
7. only when every part is staged: each volume's staged data is moved into place, then the host files.
A failure at any step removes what was staged and the containers this run created; what was there is untouched.
Then the operator runs `make up`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from whisper_common.backup.errors import ArchiveTooNew, BackupError, DataPresent
from whisper_common.backup.manifest import PARTS, SERVICE_MANIFEST, Manifest, Part

from . import service_data
from .archive import is_disk_full, members, verify
from .backup import row_counts
from .host_files import HOST_MANIFEST, PREFIX
from .settings import ROOT
from .streams import Consumer, as_root

HOST = PREFIX.rstrip("/")


def deployment_running(state_dir: Path, proxy_listen: str) -> list[str]:
    found = [f"container {service.container} is running" for service in service_data.SERVICES
             if service_data.running(service.container)]
    pidfile = state_dir / "autostart.pid"
    try:
        pid = int(pidfile.read_text().strip())
        os.kill(pid, 0)
        found.append(f"the auto-start proxy runs (pid {pid}, {pidfile})")
    except (OSError, ValueError):
        pass
    if Path("/run/systemd/system").is_dir() and os.system("systemctl is-active --quiet docker-autostart.service") == 0:
        found.append("the systemd unit docker-autostart.service is active")
    try:
        with urllib.request.urlopen(f"http://{proxy_listen}/_autostart/health", timeout=2):
            found.append(f"an auto-start proxy answers on {proxy_listen}")
    except OSError:
        pass
    return list(dict.fromkeys(found))


def parse_include(text: str, manifest: Manifest) -> list[Part]:
    chosen = [item.strip() for item in text.split(",") if item.strip()] if text else list(manifest.include)
    unknown = [item for item in chosen if item not in PARTS]
    if unknown:
        raise BackupError(f"RESTORE_INCLUDE={text!r}: choose among {','.join(PARTS)}")
    absent = [item for item in chosen if item not in manifest.include]
    if text and absent:
        raise BackupError(f"the archive holds no {', '.join(absent)} (it has {', '.join(manifest.include)})")
    return [part for part in PARTS if part in chosen]


class Restore:
    def __init__(self, args: argparse.Namespace, manifest: Manifest, include: list[Part]) -> None:
        self.args = args
        self.manifest = manifest
        self.include = include
        self.services = [service_data.BY_NAME[name] for name in manifest.services] if "data" in include else []
        self.host_members = {name: item for name, item in manifest.host.items() if item.part in include}
        self.created: list[service_data.Service] = []
        self.started: list[service_data.Source] = []
        """Volumes a staging was begun in: removed again after a failure."""
        self.finished: set[str] = set()
        self.host_plan: dict | None = None

    def host_args(self) -> list[str]:
        return ["--etc-dir", str(self.args.etc_dir), "--nginx-dir", str(self.args.nginx_dir)]

    def expected_host(self) -> dict[str, dict]:
        return {name: {**item.model_dump(), **self.manifest.files[name].model_dump()}
                for name, item in self.host_members.items()}

    # --- checks: nothing is written ---

    def check_host_files(self) -> None:
        if not self.host_members:
            return
        differ = _json_child(as_root("stack.host_files", "check", *self.host_args()), self.expected_host())
        if differ and not self.args.replace:
            raise DataPresent(f"these files exist with other content than the archive's: {', '.join(differ)}: nothing "
                              "was restored; REPLACE=1 replaces them")
        for path in differ:
            print(f"will replace {path}")

    def prepare_containers(self) -> None:
        """The images (built when missing) and the containers, created stopped when missing, as `make up` does."""
        missing = [s.name for s in self.services if service_data.docker("image", "inspect", s.image, check=False)
                   .returncode != 0]
        if missing:
            print(f"== images missing: {', '.join(missing)}: building them (scripts/build-images.sh --missing)")
            if os.system(f"{ROOT / 'scripts' / 'build-images.sh'} --missing {' '.join(missing)}") != 0:
                raise BackupError("the image build failed (above): nothing was restored")
        for service in self.services:
            existed = service_data.inspect(service.container) is not None
            result = service_data.compose(service, "up", "--no-start", "--no-build")
            if result.returncode != 0:
                raise BackupError(f"creating the {service.container} container failed: "
                                  f"{result.stderr.strip().splitlines()[-1] if result.stderr.strip() else ''}")
            if not existed:
                self.created.append(service)
                print(f"created the container {service.container} (stopped) for its volumes")

    def check_volumes(self) -> None:
        for service in self.services:
            source = self._source(service)
            record = self.manifest.services[service.name]
            args = [*service.store_args(), "--release", self.manifest.release.commit[:12],
                    *(["--replace"] if self.args.replace else [])]
            name = service_data.helper_name(service, "check")
            _child_with_input(service_data.helper_command(source, name, "check", *args, stdin=True),
                              record.part.model_dump_json().encode(), f"{service.name} ({source.volume})")

    def _source(self, service: service_data.Service) -> service_data.Source:
        source = service_data.locate(service)
        if source is None or source.state == "absent":
            raise BackupError(f"the container {service.container} is missing")
        return source

    # --- writing: staged first, then committed ---

    def stage(self) -> None:
        consumer: Consumer | None = None
        group = ""
        try:
            for member, handle in members(self.args.archive):
                head, _, rest = member.name.partition("/")
                if not self._wanted(head, member.name):
                    continue
                if head != group:
                    if consumer is not None:
                        self._finish(group, consumer)
                    if head in self.finished:
                        raise BackupError(f"the archive's {head} files are not together (not written by make backup?)")
                    group, consumer = head, self._consumer(head)
                assert consumer is not None
                consumer.add(member.name if head == HOST else rest, handle, member.size, member.mode, member.mtime)
            if consumer is not None:
                self._finish(group, consumer)
                consumer = None
            for service in self.services:  # a part without any file (an empty volume) is staged too
                if service.name not in self.finished:
                    consumer = self._consumer(service.name)
                    self._finish(service.name, consumer)
                    consumer = None
        except BaseException:
            if consumer is not None:
                consumer.kill()
            raise

    def _wanted(self, head: str, name: str) -> bool:
        if head == HOST:
            return name in self.host_members
        return any(service.name == head for service in self.services)

    def _consumer(self, head: str) -> Consumer:
        if head == HOST:
            return Consumer(as_root("stack.host_files", "stage", *self.host_args()),
                            (HOST_MANIFEST, json.dumps(self.expected_host()).encode()))
        service = service_data.BY_NAME[head]
        source = self._source(service)
        name = service_data.helper_name(service, "restore")
        args = [*service.store_args(), *(["--replace"] if self.args.replace else [])]
        part = self.manifest.services[head].part
        print(f"== {head}: writing {len(part.files)} files into {source.volume} (staged beside its data)")
        self.started.append(source)
        return Consumer(service_data.helper_command(source, name, "stage", *args, stdin=True),
                        (SERVICE_MANIFEST, part.model_dump_json().encode()),
                        on_failure=lambda: service_data.remove_helper(name))

    def _finish(self, head: str, consumer: Consumer) -> None:
        try:
            output = consumer.close()
        except BackupError as exc:
            raise BackupError(f"{head}: {exc}") from None
        for warning in consumer.warnings():
            print(f"{head}: {warning}")
        if head == HOST:
            self.host_plan = json.loads(output)
        self.finished.add(head)

    def commit(self) -> None:
        running = [s.container for s in self.services if service_data.running(s.container)]
        if running:
            raise BackupError(f"{', '.join(running)} started while the restore ran: make down first")
        for source in self.started:
            name = service_data.helper_name(source.service, "commit")
            _child_with_input(service_data.helper_command(source, name, "commit",
                                                          *(["--replace"] if self.args.replace else [])),
                              b"", source.service.name)
        self.started = []
        if self.host_plan is not None:
            _json_child(as_root("stack.host_files", "commit", *self.host_args()), self.host_plan, expect_output=False)
            self.host_plan = None

    def undo(self) -> None:
        """After a failure: the staged data and the containers this run created go; what was there stays."""
        for source in self.started:
            name = service_data.helper_name(source.service, "abort")
            try:
                _child_with_input(service_data.helper_command(source, name, "abort"), b"", source.service.name)
            except BackupError as exc:
                print(f"warning: could not remove the staged data of {source.service.name}: {exc}", file=sys.stderr)
        if self.host_plan is not None:
            try:
                _json_child(as_root("stack.host_files", "abort", *self.host_args()), self.host_plan,
                            expect_output=False)
            except BackupError as exc:
                print(f"warning: could not remove the staged host files: {exc}", file=sys.stderr)
        for service in self.created:
            service_data.compose(service, "down")


def _child_with_input(command: list[str], data: bytes, what: str) -> str:
    result = subprocess.run(command, input=data, capture_output=True, check=False, timeout=600)
    errors = result.stderr.decode(errors="replace").strip()
    for line in errors.splitlines():
        if line.startswith("warning:"):
            print(f"{what}: {line}")
    if result.returncode != 0:
        raise BackupError(f"{what}: {errors.splitlines()[-1] if errors else f'exited with status {result.returncode}'}")
    return result.stdout.decode(errors="replace")


def _json_child(command: list[str], payload: object, expect_output: bool = True) -> object:
    output = _child_with_input(command, json.dumps(payload).encode(), "host files")
    return json.loads(output) if expect_output else None


def describe(manifest: Manifest, path: Path) -> Iterator[str]:
    release = manifest.release
    yield (f"archive {path.name}: taken {manifest.created_at} by release {release.commit[:12]}"
           f"{' (with local changes)' if release.dirty else ''}; holds {', '.join(manifest.include)}")
    for name, record in manifest.services.items():
        part = record.part
        stores = ", ".join(f"{s.file} ({s.store} schema v{s.version}: {row_counts(s.rows)})" for s in part.stores)
        yield f"  {name}: {len(part.files)} files; {stores or part.database}"
        if part.missing:
            yield (f"  {name}: {len(part.missing)} file(s) its rows reference were already gone at backup time (a job "
                   "among them that had not run will fail with audio_missing)")
        if part.database == "postgresql":
            yield (f"  {name}: its jobs and sessions were in PostgreSQL: restore that database with pg_restore "
                   "(docs/backup.md) before make up")
    for note in manifest.notes:
        yield f"  note: {note}"


def run(args: argparse.Namespace) -> None:
    if not args.archive.is_file():
        raise BackupError(f"ARCHIVE={args.archive}: no such file (make restore ARCHIVE=backups/whisper-….tar.gz)")
    running = deployment_running(args.state_dir, args.proxy_listen)
    if running:
        raise BackupError(f"the deployment is running ({'; '.join(running)}): make down first, then make restore; "
                          "nothing was restored")
    print(f"== reading {args.archive} completely: every file against its checksum")
    manifest = verify(args.archive)
    for line in describe(manifest, args.archive):
        print(line)
    unknown = [name for name in manifest.services if name not in service_data.BY_NAME]
    if unknown:
        raise ArchiveTooNew(f"the archive holds services this release does not have ({', '.join(unknown)}): restore it "
                            f"with the release that wrote it ({manifest.release.commit[:12]})")
    restore = Restore(args, manifest, parse_include(args.include, manifest))
    try:
        restore.check_host_files()
        if restore.services:
            restore.prepare_containers()
            restore.check_volumes()
        restore.stage()
        restore.commit()
    except BaseException:
        restore.undo()
        raise
    parts = ", ".join(restore.include)
    print(f"restored: {parts} from {args.archive.name}; the databases open with this release's schemas. "
          "Next: make up (with the WHISPER_DOMAIN and settings of this deployment)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="stack.restore", description=__doc__.split("\n")[0])
    parser.add_argument("archive", type=Path)
    parser.add_argument("--replace", action="store_true", help="replace data the volumes and files already hold")
    parser.add_argument("--include", default="", help="comma-separated parts to restore (default: all the archive has)")
    parser.add_argument("--etc-dir", type=Path, default=Path("/etc/whisper-platform"))
    parser.add_argument("--nginx-dir", type=Path, default=Path("/etc/nginx"))
    parser.add_argument("--state-dir", type=Path, default=ROOT / ".run" / "deploy")
    parser.add_argument("--proxy-listen", default="127.0.0.1:8890")
    args = parser.parse_args(argv)
    try:
        run(args)
    except Exception as exc:  # noqa: BLE001 - every failure is one line; what was there is untouched
        if is_disk_full(exc) and not isinstance(exc, BackupError):
            message = "no space left while writing the restore: nothing was replaced; free space and run it again"
        elif isinstance(exc, (BackupError, RuntimeError, OSError)):
            message = str(exc)
        else:
            raise
        print(f"make restore: {message}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
