"""A real PostgreSQL server for tests: Debian's binaries, `initdb` + `pg_ctl` as the `postgres` user (initdb refuses
root) on a free port, in a temporary directory of its own (pytest's are private to root), stopped and removed after."""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.jobs.netns import Host
from tests.support import free_port, require


def postgres_bin() -> Path | None:
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name))
    return versions[-1].parent if versions else None


def _as_postgres(args: list[str]) -> list[str]:
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *args]
    return args


@contextmanager
def postgres_server(host: Host | None = None, clients: str | None = None) -> Iterator[str]:
    """Yields a `postgresql://` URL of a fresh database `jobs`: on 127.0.0.1, or on `host` (a network namespace)
    accepting the network `clients` (CIDR)."""
    bin_dir = postgres_bin()
    require(bin_dir is not None, "PostgreSQL server binaries (Debian package postgresql)")
    assert bin_dir is not None
    with tempfile.TemporaryDirectory(prefix="whisper-pg-") as directory:
        yield from _serve(bin_dir, Path(directory), host, clients)


def _run(args: list[str], host: Host | None = None) -> None:
    command = _as_postgres(args)
    result = subprocess.run(host.command(command) if host is not None else command, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed: {result.stdout}{result.stderr}")


def _serve(bin_dir: Path, workdir: Path, host: Host | None, clients: str | None) -> Iterator[str]:
    data = workdir / "pgdata"
    data.mkdir(parents=True)
    if os.geteuid() == 0:
        shutil.chown(workdir, "postgres")
        shutil.chown(data, "postgres")
    port = free_port()
    _run([str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8"])
    address = host.address if host is not None else "127.0.0.1"
    if clients is not None:
        with open(data / "pg_hba.conf", "a") as hba:
            hba.write(f"host all all {clients} trust\n")
    options = f"-p {port} -k {workdir} -c listen_addresses={address} -c fsync=off -c max_connections=100"
    start = [str(bin_dir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(workdir / "pg.log"), "-w", "start"]
    _run(start, host)
    try:
        _run([str(bin_dir / "createdb"), "-h", address, "-p", str(port), "-U", "postgres", "jobs"])
        yield f"postgresql://postgres@{address}:{port}/jobs"
    finally:
        subprocess.run(
            _as_postgres([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"]),
            capture_output=True,
        )
