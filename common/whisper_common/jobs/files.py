"""Where a job's files live: `DATA_DIR/jobs/<id>/audio`; uploads arrive in `DATA_DIR/jobs/.incoming/` first and move
in once complete, so a job directory never holds half a file."""
from __future__ import annotations

import os
import shutil
import time
from pathlib import Path


class JobFiles:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.root = data_dir / "jobs"
        self.incoming = self.root / ".incoming"
        self.incoming.mkdir(parents=True, exist_ok=True)

    def job_dir(self, job_id: str) -> Path:
        return self.root / job_id

    def audio_path(self, job_id: str) -> Path:
        return self.job_dir(job_id) / "audio"

    def relative(self, path: Path) -> str:
        return str(path.relative_to(self.data_dir))

    def resolve(self, relative: str) -> Path:
        return self.data_dir / relative

    def adopt(self, job_id: str, upload: Path) -> str:
        """Move a stored (fsynced) upload into the job's directory; returns its path relative to DATA_DIR (kept on the
        job). The new names are synced too, so the audio is on disk under its name before the job's row commits."""
        directory = self.job_dir(job_id)
        directory.mkdir(parents=True, exist_ok=True)
        destination = self.audio_path(job_id)
        upload.rename(destination)
        sync_directory(directory)
        sync_directory(self.root)
        return self.relative(destination)

    def remove(self, job_id: str) -> None:
        shutil.rmtree(self.job_dir(job_id), ignore_errors=True)

    def sweep_incoming(self, older_than_seconds: float) -> None:
        """Uploads left behind by a process that died mid-request."""
        cutoff = time.time() - older_than_seconds
        for path in self.incoming.iterdir():
            try:
                if path.stat().st_mtime < cutoff:
                    path.unlink()
            except FileNotFoundError:
                continue


def sync_directory(directory: Path) -> None:
    """fsync a directory: the names created or moved in it survive a power loss (POSIX; a no-op where a directory
    cannot be opened, e.g. Windows)."""
    try:
        descriptor = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
