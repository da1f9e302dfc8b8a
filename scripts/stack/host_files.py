"""The host's files of the Docker deployment in an archive: its configuration, credentials and certificates.

| part | files | archive member |
|---|---|---|
| config | `$WHISPER_ETC/autostart.json`, `whisper-faster/.env`, `whisperx/.env` (beside the compose files) | `host/etc/…`, `host/checkout/…` |
| credentials | `$WHISPER_ETC/credentials`, `$WHISPER_ETC/api-keys.json` (API keys kept on the host), `$NGINX_DIR/whisper.htpasswd` | `host/etc/…`, `host/nginx/whisper.htpasswd` |
| certificates | `$NGINX_DIR/whisper-selfsigned/*` (the stand-ins until Let's Encrypt's exist) | `host/nginx/whisper-selfsigned/…` |

A file is restored under the same root of the host it is restored on (its WHISPER_ETC, NGINX_DIR, checkout), with its
mode, owner and group. Most are root's and unreadable to others, so this module runs as root: `make backup` and
`make restore` start it with sudo when they are not root themselves.

    python -m stack.host_files read  --include config,credentials --etc-dir … --nginx-dir …   > tar (then host.json)
    python -m stack.host_files check  --etc-dir … --nginx-dir …  < {member: sha256}            > differing files
    python -m stack.host_files stage  --etc-dir … --nginx-dir …  < tar (host.json first)       > staged temp files
    python -m stack.host_files commit|abort                       < the staged list

`stage` writes each file beside its target under a temporary name (a file already equal to the archive's is left
alone); `commit` renames them into place, `abort` removes them, so nothing changes before every volume is staged too.
"""

from __future__ import annotations

import argparse
import grp
import hashlib
import io
import json
import os
import pwd
import stat
import sys
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from whisper_common.backup.errors import ArchiveDamaged, BackupError
from whisper_common.backup.manifest import CHUNK, HashingReader, HostFile, Part, safe_relative, verify_entry
from whisper_common.backup.manifest import FileEntry

from .settings import ROOT

HOST_MANIFEST = "host.json"
PREFIX = "host/"
TEMP_SUFFIX = ".whisper-restore"
PART_FILES: dict[str, tuple[tuple[str, str], ...]] = {
    "config": (("etc", "autostart.json"), ("checkout", "whisper-faster/.env"), ("checkout", "whisperx/.env")),
    # api-keys.json: the API keys file (API_KEYS_FILE) where the guide keeps it on the host, mounted into the services.
    "credentials": (("etc", "credentials"), ("etc", "api-keys.json"), ("nginx", "whisper.htpasswd")),
    "certificates": (("nginx", "whisper-selfsigned"),),  # a folder: each file in it
}


@dataclass(frozen=True)
class Roots:
    etc: Path
    nginx: Path
    checkout: Path = ROOT

    def path(self, root: str, relative: str) -> Path:
        return {"etc": self.etc, "nginx": self.nginx, "checkout": self.checkout}[root] / safe_relative(relative)


def member_name(root: str, relative: str) -> str:
    return f"{PREFIX}{root}/{relative}"


def present(include: list[str], roots: Roots) -> Iterator[tuple[Part, str, str, Path]]:
    """(part, root, relative, path) of every file of the parts that exists here."""
    for part in include:
        for root, relative in PART_FILES.get(part, ()):
            path = roots.path(root, relative)
            if path.is_dir():
                for child in sorted(path.iterdir()):
                    if child.is_file() and not child.is_symlink():
                        yield part, root, f"{relative}/{child.name}", child  # type: ignore[misc]
            elif path.is_file():
                yield part, root, relative, path  # type: ignore[misc]


def _name(lookup: str, number: int) -> str:
    try:
        return pwd.getpwuid(number).pw_name if lookup == "user" else grp.getgrgid(number).gr_name
    except KeyError:
        return str(number)


def read(include: list[str], roots: Roots, out: io.BufferedIOBase) -> None:
    described: dict[str, dict] = {}
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for part, root, relative, path in present(include, roots):
            with path.open("rb") as handle:
                status = os.fstat(handle.fileno())
                info = tarfile.TarInfo(member_name(root, relative))
                info.size, info.mode, info.mtime = status.st_size, stat.S_IMODE(status.st_mode), int(status.st_mtime)
                tar.addfile(info, handle)
            described[info.name] = HostFile(
                part=part, root=root, relative=relative, source=str(path), mode=stat.S_IMODE(status.st_mode),  # type: ignore[arg-type]
                owner=_name("user", status.st_uid), group=_name("group", status.st_gid),
            ).model_dump()
        body = json.dumps(described, indent=2).encode()
        info = tarfile.TarInfo(HOST_MANIFEST)
        info.size, info.mtime = len(body), int(time.time())
        tar.addfile(info, io.BytesIO(body))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def differing(expected: dict[str, dict], roots: Roots) -> list[str]:
    """The targets that exist with other content than the archive's (restoring them replaces something)."""
    found = []
    for described in expected.values():
        target = roots.path(described["root"], described["relative"])
        if target.exists() and (not target.is_file() or _sha256(target) != described["sha256"]):
            found.append(str(target))
    return found


def _ids(owner: str, group: str) -> tuple[int, int, bool]:
    """uid and gid for the names, falling back to root's where this host lacks one (reported)."""
    try:
        uid = pwd.getpwnam(owner).pw_uid
    except KeyError:
        uid = int(owner) if owner.isdigit() else -1
    try:
        gid = grp.getgrnam(group).gr_gid
    except KeyError:
        gid = int(group) if group.isdigit() else -1
    return max(uid, 0), max(gid, 0), uid >= 0 and gid >= 0


def stage(roots: Roots, stream: io.BufferedIOBase) -> dict:
    staged: list[list[str]] = []
    created: list[str] = []
    unchanged: list[str] = []
    try:
        with tarfile.open(fileobj=stream, mode="r|") as tar:
            members = iter(tar)
            first = next(members, None)
            if first is None or first.name != HOST_MANIFEST:
                raise ArchiveDamaged(f"the host files' stream does not begin with {HOST_MANIFEST}")
            expected: dict[str, dict] = json.loads(_extract(tar, first).read())
            for member in members:
                described = expected.get(member.name)
                if described is None or not member.isfile():
                    raise ArchiveDamaged(f"unexpected member {member.name} among the host files")
                item = HostFile.model_validate({k: v for k, v in described.items() if k in HostFile.model_fields})
                target = roots.path(item.root, item.relative)
                source = _extract(tar, member)
                if target.is_file() and _sha256(target) == described["sha256"]:
                    while source.read(CHUNK):
                        pass
                    unchanged.append(str(target))
                    continue
                created += _make_parents(target.parent, item)
                temp = target.with_name(f".{target.name}{TEMP_SUFFIX}")
                staged.append([str(temp), str(target)])
                reader = HashingReader(source)
                descriptor = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                with os.fdopen(descriptor, "wb") as out:
                    while chunk := reader.read(CHUNK):
                        out.write(chunk)
                    out.flush()
                    os.fsync(out.fileno())
                verify_entry(member.name, FileEntry(size=described["size"], sha256=described["sha256"]),
                             reader.entry())
                uid, gid, _ = _ids(item.owner, item.group)
                if os.geteuid() == 0:
                    os.chown(temp, uid, gid)
                os.chmod(temp, item.mode)
    except BaseException:
        abort({"staged": staged, "created": created})
        raise
    return {"staged": staged, "created": created, "unchanged": unchanged}


def _make_parents(folder: Path, item: HostFile) -> list[str]:
    """Folders a fresh host lacks: Nginx's (certificates) root:<the file's group> 0750 like `make up` makes them, others
    0755 (the proxy's user reads the config in WHISPER_ETC)."""
    missing = []
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    for path in reversed(missing):
        path.mkdir(mode=0o750 if item.root == "nginx" else 0o755)
        if os.geteuid() == 0 and item.root == "nginx":
            os.chown(path, 0, _ids(item.owner, item.group)[1])
    return [str(path) for path in missing]


def commit(plan: dict) -> None:
    for temp, target in plan["staged"]:
        os.replace(temp, target)
    for folder in {str(Path(target).parent) for _, target in plan["staged"]}:
        descriptor = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


def abort(plan: dict) -> None:
    for temp, _ in plan.get("staged", []):
        Path(temp).unlink(missing_ok=True)
    for folder in plan.get("created", []):  # deepest first
        try:
            Path(folder).rmdir()
        except OSError:
            pass


def _extract(tar: tarfile.TarFile, member: tarfile.TarInfo) -> io.BufferedReader:
    handle = tar.extractfile(member)
    if handle is None:
        raise ArchiveDamaged(f"{member.name} is not a regular file")
    return handle  # type: ignore[return-value]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="stack.host_files", description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=("read", "check", "stage", "commit", "abort"))
    parser.add_argument("--include", default="config,credentials,certificates")
    parser.add_argument("--etc-dir", type=Path, default=Path("/etc/whisper-platform"))
    parser.add_argument("--nginx-dir", type=Path, default=Path("/etc/nginx"))
    args = parser.parse_args(argv)
    roots = Roots(args.etc_dir, args.nginx_dir)
    try:
        if args.command == "read":
            read(args.include.split(","), roots, sys.stdout.buffer)  # type: ignore[arg-type]
        elif args.command == "check":
            print(json.dumps(differing(json.load(sys.stdin), roots)))
        elif args.command == "stage":
            print(json.dumps(stage(roots, sys.stdin.buffer)))  # type: ignore[arg-type]
        elif args.command == "commit":
            commit(json.load(sys.stdin))
        else:
            abort(json.load(sys.stdin))
    except (BackupError, OSError, ValueError) as exc:
        print(f"host files: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
