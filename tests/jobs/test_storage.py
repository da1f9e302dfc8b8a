"""Storage limits: a disk that is full answers 507 and keeps nothing; finished jobs go after JOB_RETENTION, files
included; an audio_url download stops at MAX_UPLOAD_MB. DATA_DIR is a real 12 MiB tmpfs mounted by the test
(root only), MAX_UPLOAD_MB is 8."""
from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.jobs.conftest import start_jobs_server
from tests.jobs.helpers import submit, wait_for
from tests.service_servers import Server
from tests.support import fixture_path, free_port, require


@pytest.fixture(scope="module")
def small_disk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    require(os.geteuid() == 0, "root, to mount a small tmpfs as DATA_DIR")
    mount_point = tmp_path_factory.mktemp("small-disk")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=12m", "tmpfs", str(mount_point)], check=True)
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


@pytest.fixture(scope="module")
def server(small_disk: Path) -> Iterator[Server]:
    with start_jobs_server("jobs-storage", small_disk, JOB_RETENTION="3s", MAX_UPLOAD_MB="8") as running:
        yield running


def _leftovers(data_dir: Path) -> list[Path]:
    return [path for path in (data_dir / "jobs").rglob("*") if path.is_file()]


def test_upload_larger_than_the_free_space_is_507_and_nothing_is_kept(server: Server, small_disk: Path) -> None:
    big = os.urandom(7 * 2**20)  # under MAX_UPLOAD_MB, over the free space once the filler takes half the disk
    filler = small_disk / "filler"
    filler.write_bytes(b"\0" * (6 * 2**20))
    try:
        with server.client() as http:
            declared = http.post("/v1/jobs", files={"file": ("big.wav", big)})
            assert declared.status_code == 507, declared.text
            assert declared.json()["error"]["code"] == "insufficient_storage"

            def chunks() -> Iterator[bytes]:  # no Content-Length: the disk fills while the body streams in
                boundary = b"jobsboundary"
                yield b"--" + boundary + b'\r\nContent-Disposition: form-data; name="file"; filename="big.wav"\r\n\r\n'
                for start in range(0, len(big), 1 << 20):
                    yield big[start : start + (1 << 20)]
                yield b"\r\n--" + boundary + b"--\r\n"

            streamed = http.post(
                "/v1/jobs", content=chunks(), headers={"content-type": "multipart/form-data; boundary=jobsboundary"}
            )
            assert streamed.status_code == 507, streamed.text
            assert http.get("/v1/jobs").json()["data"] == []
    finally:
        filler.unlink()
    assert _leftovers(small_disk) == []


def test_finished_jobs_are_removed_after_retention(server: Server, small_disk: Path) -> None:
    with server.client() as http:
        job_id = submit(http, fixture_path("jfk.flac")).json()["id"]
        assert (small_disk / "jobs" / job_id / "audio").is_file()
        assert wait_for(http, job_id)["status"] == "succeeded"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and http.get(f"/v1/jobs/{job_id}").status_code == 200:
            time.sleep(0.2)
        assert http.get(f"/v1/jobs/{job_id}").status_code == 404
    assert not (small_disk / "jobs" / job_id).exists()


def test_an_audio_url_larger_than_the_upload_limit_is_not_downloaded(server: Server, small_disk: Path) -> None:
    payload = b"\0" * (9 * 2**20)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            self.send_response(200)
            if self.path == "/declared":
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
                return
            self.send_header("transfer-encoding", "chunked")  # no length: counted while it streams
            self.end_headers()
            for start in range(0, len(payload), 1 << 20):
                chunk = payload[start : start + (1 << 20)]
                self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            self.wfile.write(b"0\r\n\r\n")

        def log_message(self, *_: object) -> None:
            pass

    port = free_port()
    host = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=host.serve_forever, daemon=True).start()
    try:
        with server.client() as http:
            ids = [http.post("/v1/jobs", json={"audio_url": f"http://127.0.0.1:{port}{path}"}).json()["id"]
                   for path in ("/declared", "/streamed")]
            jobs = [wait_for(http, job_id) for job_id in ids]
    finally:
        host.shutdown()
        host.server_close()
    for job in jobs:
        assert job["status"] == "failed" and job["attempts"] == 1, job
        assert job["error"]["code"] == "audio_url_too_large" and "8 MiB" in job["error"]["message"]
    assert _leftovers(small_disk) == []
