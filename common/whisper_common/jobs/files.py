"""Where a job's files live: `DATA_DIR/jobs/<id>/audio`; uploads arrive in `DATA_DIR/jobs/.incoming/` first and move
in once complete, so a job directory never holds half a file."""
from __future__ import annotations

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
        """Move a stored upload into the job's directory; returns its path relative to DATA_DIR (kept on the job)."""
        directory = self.job_dir(job_id)
        directory.mkdir(parents=True, exist_ok=True)
        destination = self.audio_path(job_id)
        upload.rename(destination)
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
