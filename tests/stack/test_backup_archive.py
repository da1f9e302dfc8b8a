"""The host side of `make backup`/`make restore` without Docker: the archive file (written under a temporary name and
linked into place when complete; never over an older one; a full disk leaves nothing behind), its verification (a
truncated, altered, incomplete or newer archive refused before anything is written), the host's files (read with their
mode and owner, staged beside their targets, put in place only on commit), and the refusals of the two commands."""

from __future__ import annotations

import grp
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from scripts.stack import host_files
from scripts.stack.archive import ArchiveWriter, is_disk_full, verify
from tests.support import ROOT
from whisper_common.backup.errors import ArchiveDamaged, ArchiveTooNew
from whisper_common.backup.manifest import FORMAT, Manifest, Release

SCRIPTS = ROOT / "scripts"


def manifest_for(writer: ArchiveWriter) -> Manifest:
    return Manifest(format=FORMAT, created_at="2026-12-06T00:00:00Z", release=Release(commit="0" * 40),
                    include=["config"], files=dict(writer.files))


def write_archive(folder: Path, name: str, files: dict[str, bytes]) -> Path:
    with ArchiveWriter(folder, name) as writer:
        for member, data in files.items():
            writer.add(member, io.BytesIO(data), len(data))
        return writer.complete(manifest_for(writer))


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


def test_an_archive_appears_only_when_complete_and_never_over_an_older_one(tmp_path: Path) -> None:
    first = write_archive(tmp_path, "whisper-x.tar.gz", {"host/etc/credentials": b"user:secret\n"})
    assert first.name == "whisper-x.tar.gz" and first.stat().st_mode & 0o777 == 0o600
    digest = hashlib.sha256(first.read_bytes()).hexdigest()
    second = write_archive(tmp_path, "whisper-x.tar.gz", {"host/etc/credentials": b"other\n"})
    assert second.name == "whisper-x-2.tar.gz"
    assert hashlib.sha256(first.read_bytes()).hexdigest() == digest
    assert sorted(p.name for p in tmp_path.iterdir()) == ["whisper-x-2.tar.gz", "whisper-x.tar.gz"]
    assert verify(first).files["host/etc/credentials"].size == len(b"user:secret\n")

    with pytest.raises(RuntimeError, match="a failure half-way"):
        with ArchiveWriter(tmp_path, "whisper-y.tar.gz") as writer:
            writer.add("host/etc/a", io.BytesIO(b"a"), 1)
            assert writer.partial.name == ".whisper-y.tar.gz.partial" and writer.partial.exists()
            raise RuntimeError("a failure half-way")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["whisper-x-2.tar.gz", "whisper-x.tar.gz"]


def test_a_full_disk_removes_the_unfinished_archive_and_leaves_the_older_one(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "backups", "1m") as backups:
        older = write_archive(backups, "whisper-older.tar.gz", {"host/etc/credentials": b"kept\n"})
        digest = hashlib.sha256(older.read_bytes()).hexdigest()
        with pytest.raises(OSError) as raised:
            with ArchiveWriter(backups, "whisper-new.tar.gz") as writer:
                noise = os.urandom(3 << 20)  # incompressible: more than the disk holds
                writer.add("whisper-faster/data/jobs/job_1/audio", io.BytesIO(noise), len(noise))
                writer.complete(manifest_for(writer))
        assert is_disk_full(raised.value)
        assert [p.name for p in backups.iterdir()] == [older.name]
        assert hashlib.sha256(older.read_bytes()).hexdigest() == digest


def test_the_backup_command_on_a_full_disk_says_so_in_one_line(tmp_path: Path) -> None:
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "credentials").write_bytes(os.urandom(3 << 20))
    with tmpfs(tmp_path / "backups", "1m") as backups:
        older = write_archive(backups, "whisper-older.tar.gz", {"host/etc/credentials": b"kept\n"})
        result = subprocess.run(
            [sys.executable, "-m", "stack.backup", "--backup-dir", str(backups), "--include", "credentials",
             "--etc-dir", str(etc), "--nginx-dir", str(tmp_path / "nginx")],
            env={**os.environ, "PYTHONPATH": str(SCRIPTS)}, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert result.returncode == 1
        lines = result.stderr.strip().splitlines()
        assert lines == [f"make backup: no space left in {backups} (BACKUP_DIR): the unfinished archive was removed; "
                         "older archives are untouched. Free space there, or set BACKUP_DIR to a disk with room"]
        assert [p.name for p in backups.iterdir()] == [older.name]


def rewrite(path: Path, target: Path, *, drop: str = "", flip: str = "", manifest_change=None,  # noqa: ANN001
            extra: dict[str, bytes] | None = None) -> Path:
    with tarfile.open(path, "r:gz") as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]
    manifest = json.loads(members.pop("manifest.json"))
    if manifest_change:
        manifest_change(manifest)
    members.pop(drop, None)
    if flip:
        members[flip] = members[flip][:-1] + bytes([members[flip][-1] ^ 1])
    members.update(extra or {})
    with tarfile.open(target, "w:gz") as tar:
        for name, data in [*members.items(), ("manifest.json", json.dumps(manifest).encode())]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return target


@pytest.mark.parametrize("damage", ["truncated", "flipped", "dropped", "extra", "no-manifest", "unsafe", "newer"])
def test_verify_refuses_an_archive_that_is_not_whole_or_is_newer(tmp_path: Path, damage: str) -> None:
    good = write_archive(tmp_path / "good", "whisper-good.tar.gz",
                         {"host/etc/credentials": b"user:secret\n", "whisper-faster/data/jobs/job_1/audio": b"x" * 5000})
    audio = "whisper-faster/data/jobs/job_1/audio"
    bad = tmp_path / "bad.tar.gz"
    if damage == "truncated":
        bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    elif damage == "flipped":
        rewrite(good, bad, flip=audio)
    elif damage == "dropped":
        rewrite(good, bad, drop=audio)
    elif damage == "extra":
        rewrite(good, bad, extra={"host/etc/smuggled": b"x"})
    elif damage == "unsafe":
        rewrite(good, bad, extra={"host/../../etc/passwd": b"x"})
    elif damage == "newer":
        rewrite(good, bad, manifest_change=lambda m: m.update(format=FORMAT + 1, layout="something new"))
    else:
        with tarfile.open(good, "r:gz") as tar, tarfile.open(bad, "w:gz") as out:
            for member in tar.getmembers():
                if member.name != "manifest.json":
                    out.addfile(member, tar.extractfile(member))
    expected = {
        "truncated": (ArchiveDamaged, "is damaged or cut short"),
        "flipped": (ArchiveDamaged, f"{audio} in the archive does not match its checksum"),
        "dropped": (ArchiveDamaged, "lacks 1 file"),
        "extra": (ArchiveDamaged, "host/etc/smuggled, which its manifest does not list"),
        "no-manifest": (ArchiveDamaged, "has no manifest.json"),
        "unsafe": (ArchiveDamaged, "unsafe path"),
        "newer": (ArchiveTooNew, f"format {FORMAT + 1}, written by a newer release"),
    }[damage]
    with pytest.raises(expected[0], match=expected[1].replace("(", r"\(")):
        verify(bad)


@pytest.fixture
def roots(tmp_path: Path) -> host_files.Roots:
    etc, nginx, checkout = tmp_path / "etc", tmp_path / "nginx", tmp_path / "checkout"
    (nginx / "whisper-selfsigned").mkdir(parents=True)
    etc.mkdir()
    (checkout / "whisper-faster").mkdir(parents=True)
    (etc / "credentials").write_text("user=whisper\npassword=secret\n")
    (etc / "credentials").chmod(0o600)
    (etc / "autostart.json").write_text('{"services": {}}\n')
    (nginx / "whisper.htpasswd").write_text("whisper:$6$hash\n")
    (nginx / "whisper.htpasswd").chmod(0o640)
    (nginx / "whisper-selfsigned" / "whisper.example.com.pem").write_text("CERT\n")
    (nginx / "whisper-selfsigned" / "whisper.example.com.key").write_text("KEY\n")
    (checkout / "whisper-faster" / ".env").write_text("WHISPER__MODEL=small\n")
    return host_files.Roots(etc, nginx, checkout)


def read_host(include: list[str], roots: host_files.Roots) -> tuple[dict[str, dict], dict[str, bytes]]:
    out = io.BytesIO()
    host_files.read(include, roots, out)  # type: ignore[arg-type]
    out.seek(0)
    with tarfile.open(fileobj=out, mode="r|") as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar}  # type: ignore[union-attr]
    described = json.loads(members.pop(host_files.HOST_MANIFEST))
    for name, data in members.items():
        described[name] |= {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    return described, members


def host_stream(described: dict[str, dict], members: dict[str, bytes]) -> io.BytesIO:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w|") as tar:
        for name, data in [(host_files.HOST_MANIFEST, json.dumps(described).encode()), *members.items()]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    out.seek(0)
    return out


def test_host_files_travel_with_their_mode_and_owner_and_change_only_on_commit(roots: host_files.Roots,
                                                                              tmp_path: Path) -> None:
    if os.geteuid() == 0 and _group_exists("www-data"):
        os.chown(roots.nginx / "whisper.htpasswd", 0, grp.getgrnam("www-data").gr_gid)
    described, members = read_host(["config", "credentials", "certificates"], roots)
    assert sorted(members) == [
        "host/checkout/whisper-faster/.env", "host/etc/autostart.json", "host/etc/credentials",
        "host/nginx/whisper-selfsigned/whisper.example.com.key", "host/nginx/whisper-selfsigned/whisper.example.com.pem",
        "host/nginx/whisper.htpasswd"]
    assert described["host/etc/credentials"]["mode"] == 0o600 and described["host/etc/credentials"]["part"] == \
        "credentials"

    fresh = host_files.Roots(tmp_path / "new-etc", tmp_path / "new-nginx", tmp_path / "new-checkout")
    assert host_files.differing(described, fresh) == []
    plan = host_files.stage(fresh, host_stream(described, members))  # type: ignore[arg-type]
    assert not (fresh.etc / "credentials").exists()  # staged under temporary names only
    host_files.commit(plan)
    for name, data in members.items():
        item = described[name]
        target = fresh.path(item["root"], item["relative"])
        assert target.read_bytes() == data and target.stat().st_mode & 0o777 == item["mode"]
    htpasswd = fresh.nginx / "whisper.htpasswd"
    if os.geteuid() == 0 and _group_exists("www-data"):
        assert grp.getgrgid(htpasswd.stat().st_gid).gr_name == "www-data"
        assert (fresh.nginx / "whisper-selfsigned").stat().st_mode & 0o777 == 0o750
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(host_files.TEMP_SUFFIX)]

    (fresh.etc / "autostart.json").write_text('{"edited": true}\n')
    assert host_files.differing(described, fresh) == [str(fresh.etc / "autostart.json")]
    plan = host_files.stage(fresh, host_stream(described, members))  # type: ignore[arg-type]
    assert len(plan["staged"]) == 1 and len(plan["unchanged"]) == 5
    host_files.abort(plan)
    assert (fresh.etc / "autostart.json").read_text() == '{"edited": true}\n'


def test_a_damaged_host_file_is_refused_and_nothing_is_left_behind(roots: host_files.Roots, tmp_path: Path) -> None:
    described, members = read_host(["credentials"], roots)
    members["host/etc/credentials"] = b"user=whisper\npassword=tampered\n"
    fresh = host_files.Roots(tmp_path / "new-etc", tmp_path / "new-nginx", tmp_path / "new-checkout")
    with pytest.raises(ArchiveDamaged, match="does not match its checksum"):
        host_files.stage(fresh, host_stream(described, members))  # type: ignore[arg-type]
    assert not fresh.etc.exists() and not fresh.nginx.exists()


def _group_exists(name: str) -> bool:
    try:
        grp.getgrnam(name)
    except KeyError:
        return False
    return True


def run_restore(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "stack.restore", *args], env={**os.environ, "PYTHONPATH": str(SCRIPTS)},
                          capture_output=True, text=True, timeout=120)


def test_restore_refuses_a_missing_archive_and_a_running_proxy_in_one_line(tmp_path: Path) -> None:
    result = run_restore(str(tmp_path / "nope.tar.gz"), "--state-dir", str(tmp_path))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [f"make restore: ARCHIVE={tmp_path / 'nope.tar.gz'}: no such file "
                                                  "(make restore ARCHIVE=backups/whisper-….tar.gz)"]
    archive = write_archive(tmp_path / "backups", "whisper-a.tar.gz", {"host/etc/credentials": b"x\n"})
    (tmp_path / "autostart.pid").write_text(str(os.getpid()))  # a live process stands for the proxy
    result = run_restore(str(archive), "--state-dir", str(tmp_path), "--proxy-listen", "127.0.0.1:9")
    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert f"the auto-start proxy runs (pid {os.getpid()}" in line and "make down first" in line, line


def test_backup_refuses_an_unknown_part_in_one_line(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "stack.backup", "--backup-dir", str(tmp_path), "--include",
                             "data,secrets"], env={**os.environ, "PYTHONPATH": str(SCRIPTS)}, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "make backup: BACKUP_INCLUDE='data,secrets': choose among data,config,credentials,certificates "
        "(comma-separated): no archive was written"]
    assert list(tmp_path.iterdir()) == []


def test_the_api_keys_file_kept_on_the_host_travels_with_the_credentials(roots: host_files.Roots,
                                                                         tmp_path: Path) -> None:
    """API_KEYS_FILE where the guide keeps it on the host ($WHISPER_ETC/api-keys.json, mounted into the services): a
    restore gives back the same keys, 0600."""
    keys = roots.etc / "api-keys.json"
    keys.write_text('{"keys": [{"name": "team-a", "sha256": "ab"}]}\n')
    keys.chmod(0o600)
    described, members = read_host(["credentials"], roots)
    assert members["host/etc/api-keys.json"] == keys.read_bytes()
    assert described["host/etc/api-keys.json"]["part"] == "credentials"
    fresh = host_files.Roots(tmp_path / "new-etc", tmp_path / "new-nginx", tmp_path / "new-checkout")
    host_files.commit(host_files.stage(fresh, host_stream(described, members)))  # type: ignore[arg-type]
    restored = fresh.etc / "api-keys.json"
    assert restored.read_bytes() == keys.read_bytes() and restored.stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize(("setting", "archived"), [
    ("/data/api-keys.json", ("api-keys.json",)), ("/data/keys/team.json", ("keys/team.json",)),
    ("/etc/whisper-platform/api-keys.json", ()), ("/data", ()), ("/data/../etc/passwd", ()), ("", ()),
    ("data/api-keys.json", ()),
])
def test_make_backup_archives_the_api_keys_file_of_a_container_when_it_lies_in_the_data_volume(
        setting: str, archived: tuple[str, ...]) -> None:
    from scripts.stack.service_data import in_data_volume

    assert in_data_volume(setting) == archived
