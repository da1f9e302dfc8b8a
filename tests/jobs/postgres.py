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

from tests.support import free_port, require


def postgres_bin() -> Path | None:
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name))
    return versions[-1].parent if versions else None


def _as_postgres(args: list[str]) -> list[str]:
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *args]
    return args


@contextmanager
def postgres_server() -> Iterator[str]:
    """Yields a `postgresql://` URL of a fresh database `jobs`."""
    bin_dir = postgres_bin()
    require(bin_dir is not None, "PostgreSQL server binaries (Debian package postgresql)")
    assert bin_dir is not None
    with tempfile.TemporaryDirectory(prefix="whisper-pg-") as directory:
        yield from _serve(bin_dir, Path(directory))


def _run(args: list[str]) -> None:
    result = subprocess.run(_as_postgres(args), capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed: {result.stdout}{result.stderr}")


def _serve(bin_dir: Path, workdir: Path) -> Iterator[str]:
    data = workdir / "pgdata"
    data.mkdir(parents=True)
    if os.geteuid() == 0:
        shutil.chown(workdir, "postgres")
        shutil.chown(data, "postgres")
    port = free_port()
    _run([str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8"])
    options = f"-p {port} -k {workdir} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=100"
    _run([str(bin_dir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(workdir / "pg.log"), "-w", "start"])
    try:
        _run([str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "jobs"])
        yield f"postgresql://postgres@127.0.0.1:{port}/jobs"
    finally:
        subprocess.run(
            _as_postgres([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"]),
            capture_output=True,
        )
