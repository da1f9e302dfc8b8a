"""The Docker deployment for real: `make images`, `make up`, requests through Nginx (TLS + basic auth) and the
auto-start proxy served by containers the proxy woke, the idle stop, a second wake, `make down` and `make up` again at
once; a re-run that must fail (an htpasswd file Nginx cannot read, a certificate folder with the wrong owner) leaves
the deployment serving; a service whose model cannot be loaded answers 503 with the reason within seconds.

Real everything: dockerd, the images built from the Dockerfiles, compose, the proxy as `make up` installs it (a
background process: no systemd here), the host's own Nginx with Debian's nginx.conf (workers as www-data, see
deployment.py), the services' shipped model defaults and the shared audio fixtures.
"""

from __future__ import annotations

import grp
import os
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import jiwer
import pytest
from openai import OpenAI

from tests.containers.conftest import BuiltImages
from tests.containers.deployment import HOSTS, NGINX_CONF, Deployment, require_stock_nginx
from tests.containers.docker_cli import CONTAINERS, docker, inspect, running, wait_until
from tests.stack.harness import require_nginx
from tests.support import fixture_path

pytestmark = [pytest.mark.docker, pytest.mark.stack]

JFK_REFERENCE = (
    "And so my fellow Americans, ask not what your country can do for you, ask what you can do for your country."
)


@pytest.fixture
def deployment(tmp_path: Path, built_images: BuiltImages) -> Iterator[Deployment]:
    require_nginx()
    require_stock_nginx()
    for container in CONTAINERS.values():
        if inspect(container) is not None:
            pytest.fail(f"a container named {container} exists already (a deployment on this engine?): not touching it")
    deployment = Deployment(tmp_path)
    projects: set[str] = set()
    try:
        yield deployment
    finally:
        projects |= deployment.projects()
        deployment.cleanup(projects or {"whisper-faster", "whisperfaster", "whisperx"})


def _wer(reference: str, hypothesis: str) -> float:
    def normalize(text: str) -> str:
        return re.sub(r"[^a-z' ]", " ", text.lower())

    return float(jiwer.wer(normalize(reference), normalize(hypothesis)))


def _transcribe_jfk(deployment: Deployment) -> str:
    with deployment.client() as http:
        openai = OpenAI(
            base_url=deployment.url("whisper-faster", "/v1"), api_key="unused", http_client=http, max_retries=0
        )
        with fixture_path("jfk.flac").open("rb") as audio:
            return openai.audio.transcriptions.create(model="whisper-1", file=audio).text


def _diarize_sample(deployment: Deployment) -> dict:
    with deployment.client() as http, fixture_path("sample.wav").open("rb") as audio:
        response = http.post(
            deployment.url("whisperx", "/transcribe"),
            files={"file": ("sample.wav", audio, "audio/wav")},
            data={"diarize": "true"},
        )
    assert response.status_code == 200, response.text
    return response.json()


def _healthy(container: str) -> bool:
    info = inspect(container)
    return bool(info and info["State"].get("Health", {}).get("Status") == "healthy")


def _assert_hardened(container: str) -> None:
    """A running container as compose made it: healthy, not root, a read-only root with a writable /tmp and /data,
    named volumes for the model cache and the data."""
    wait_until(lambda: _healthy(container), 40, f"{container}'s HEALTHCHECK to pass")
    info = inspect(container)
    assert info is not None
    assert info["HostConfig"]["ReadonlyRootfs"] is True
    assert "/tmp" in info["HostConfig"]["Tmpfs"]
    assert docker("exec", container, "id", "-u").stdout.strip() == "10001"
    denied = docker("exec", container, "touch", "/opt/venv/written", check=False)
    assert denied.returncode != 0 and "Read-only file system" in denied.stderr, denied
    docker("exec", container, "touch", "/tmp/written", "/data/written")
    volumes = {m["Destination"]: m for m in info["Mounts"]}
    assert volumes["/data"]["Type"] == "volume"
    assert volumes["/home/app/.cache/huggingface"]["Type"] == "volume"
    assert "DATA_DIR=/data" in info["Config"]["Env"]


def _nginx_worker_users() -> set[str]:
    master = Path("/run/nginx.pid").read_text().strip()
    workers = subprocess.run(["ps", "-o", "user=", "--ppid", master], capture_output=True, text=True)
    return set(workers.stdout.split())


def _assert_readable_by_www_data_only(path: Path) -> None:
    info = path.stat()
    assert info.st_uid == 0 and grp.getgrgid(info.st_gid).gr_name == "www-data", path
    assert info.st_mode & 0o777 == 0o640, f"{path}: {info.st_mode & 0o777:o}"
    readable = subprocess.run(["runuser", "-u", "www-data", "--", "test", "-r", str(path)])
    assert readable.returncode == 0, f"www-data cannot read {path}"
    other = subprocess.run(["runuser", "-u", "nobody", "--", "test", "-r", str(path)])
    assert other.returncode != 0, f"nobody can read {path}"


def _models_answer(deployment: Deployment, service: str) -> httpx.Response:
    with deployment.client() as http:
        return http.get(deployment.url(service, "/v1/models"))


@pytest.mark.timeout(2400)
def test_make_up_serves_requests_from_woken_containers_and_make_down_removes_them(deployment: Deployment) -> None:
    up = deployment.make("up")
    assert up.returncode == 0, up.stdout[-4000:] + up.stderr[-4000:]
    # What make up told the operator: the model each service loads, and a request through Nginx per site.
    assert "whisper-faster will load model 'tiny.en' (embedded in the image)" in up.stdout, up.stdout[-3000:]
    assert "whisperx will load model 'tiny.en' (embedded in the image)" in up.stdout, up.stdout[-3000:]
    for host in HOSTS.values():
        assert f"https://{host}: answered through Nginx and the proxy" in up.stdout
    # Debian's Nginx, untouched: its workers are www-data, and what make up wrote is theirs to read, nobody else's.
    assert "user www-data;" in NGINX_CONF.read_text()
    assert _nginx_worker_users() == {"www-data"}
    _assert_readable_by_www_data_only(deployment.nginx_dir / "whisper.htpasswd")
    for host in HOSTS.values():
        _assert_readable_by_www_data_only(deployment.nginx_dir / "whisper-selfsigned" / f"{host}.pem")
        _assert_readable_by_www_data_only(deployment.nginx_dir / "whisper-selfsigned" / f"{host}.key")
    _assert_readable_by_www_data_only(deployment.nginx_dir / "snippets" / "json-errors.conf")

    # Created, not started: the proxy wakes them.
    for service, container in CONTAINERS.items():
        info = inspect(container)
        assert info is not None, f"make up did not create {container}"
        assert info["State"]["Status"] == "created", info["State"]
        binding = info["HostConfig"]["PortBindings"]
        assert [b["HostIp"] for bs in binding.values() for b in bs] == ["127.0.0.1"], binding
        assert [b["HostPort"] for bs in binding.values() for b in bs] == [str(deployment.service_ports[service])]
    assert deployment.proxy_states() == {host: "stopped" for host in HOSTS.values()}
    projects = deployment.projects()

    # 1. The openai client through Nginx wakes faster-whisper.
    assert _wer(JFK_REFERENCE, _transcribe_jfk(deployment)) < 0.15
    assert running("faster-whisper")
    assert not running("whisperx"), "waking one service must not start the other"
    _assert_hardened("faster-whisper")  # checked while the idle timer runs: well within it

    # 2. /transcribe with diarization wakes whisperx: two speakers in sample.wav.
    body = _diarize_sample(deployment)
    speakers = {segment["speaker"] for segment in body["segments"] if segment.get("speaker")}
    assert len(speakers) == 2, speakers
    assert running("whisperx")
    _assert_hardened("whisperx")

    # 3. Idle: the proxy stops both.
    wait_until(
        lambda: not running("faster-whisper") and not running("whisperx"),
        deployment.idle_timeout + 120,
        "the proxy to stop both idle containers",
        interval=2,
    )
    assert deployment.proxy_states() == {host: "stopped" for host in HOSTS.values()}

    # 4. The next requests wake them again; what /data got survives the stop (a volume, not the container's layer).
    assert _wer(JFK_REFERENCE, _transcribe_jfk(deployment)) < 0.15
    assert running("faster-whisper")
    assert docker("exec", "faster-whisper", "ls", "/data/written", check=False).returncode == 0
    assert len({s["speaker"] for s in _diarize_sample(deployment)["segments"] if s.get("speaker")}) == 2
    assert running("whisperx")

    # 5. A re-run that must fail leaves the deployment serving. An htpasswd file Nginx's workers cannot read: named
    #    with the fix before anything changes; meanwhile Nginx's own error is a 500 in JSON, not an HTML page.
    htpasswd = deployment.nginx_dir / "whisper.htpasswd"
    htpasswd.chmod(0o600)
    refused = deployment.make("up")
    assert refused.returncode != 0
    assert f"cannot read {htpasswd}" in refused.stderr and f"chgrp www-data {htpasswd} && chmod 0640" in refused.stderr
    assert "nothing was changed" in refused.stderr
    gateway_error = _models_answer(deployment, "whisper-faster")
    assert gateway_error.status_code == 500 and gateway_error.headers["content-type"] == "application/json"
    assert gateway_error.json()["error"]["code"] == "internal_error"
    htpasswd.chmod(0o640)
    assert _models_answer(deployment, "whisper-faster").status_code == 200
    #    A certificate folder that is not root's: named, and Nginx keeps serving with what it has loaded.
    selfsigned = deployment.nginx_dir / "whisper-selfsigned"
    os.chown(selfsigned, 65534, 0)
    try:
        refused = deployment.make("up")
    finally:
        os.chown(selfsigned, 0, grp.getgrnam("www-data").gr_gid)
    assert refused.returncode != 0 and f"{selfsigned} (folder of the TLS certificates) is owned by uid 65534" in refused.stderr
    assert "chown -R root" in refused.stderr
    assert [p.name for p in (deployment.nginx_dir / "sites-enabled").iterdir() if "whisper" in p.name]
    assert _wer(JFK_REFERENCE, _transcribe_jfk(deployment)) < 0.15

    # 6. make down: no container, network or site of ours left; the proxy is gone.
    down = deployment.make("down")
    assert down.returncode == 0, down.stdout[-4000:] + down.stderr[-4000:]
    for container in CONTAINERS.values():
        assert inspect(container) is None, f"{container} survived make down"
    for project in projects:
        networks = docker("network", "ls", "-q", "--filter", f"label=com.docker.compose.project={project}").stdout
        assert networks.strip() == "", f"network of {project} survived make down"
    assert not [p.name for p in (deployment.nginx_dir / "sites-enabled").iterdir() if "whisper" in p.name]
    with pytest.raises(Exception):
        deployment.proxy_states()

    # 7. make up again at once: the old proxy's connections in TIME-WAIT do not make its address "taken".
    again = deployment.make("up")
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert deployment.proxy_states() == {host: "stopped" for host in HOSTS.values()}


@pytest.mark.timeout(900)
def test_a_service_whose_model_cannot_be_loaded_answers_503_with_the_reason_at_once(deployment: Deployment) -> None:
    # A model that is neither in the image nor in the cache volume, on a host whose services may not download.
    deployment.extra_env = {"WHISPER__MODEL": "large-v3", "HF_HUB_OFFLINE": "1"}
    up = deployment.make("up")
    assert up.returncode == 0, up.stdout[-4000:] + up.stderr[-4000:]
    warning = "warning: whisperx will load model 'large-v3', which is neither in the image nor in its model-cache volume"
    assert warning in up.stderr and "HF_HUB_OFFLINE=1 is set for it" in up.stderr, up.stderr[-3000:]

    started = time.monotonic()
    with deployment.client() as http, fixture_path("sample.wav").open("rb") as audio:
        answer = http.post(deployment.url("whisperx", "/transcribe"), files={"file": ("sample.wav", audio, "audio/wav")})
    waited = time.monotonic() - started
    assert answer.status_code == 503, answer.text
    assert waited < 60, f"the caller waited {waited:.0f} s (startTimeout is 300 s)"
    body = answer.json()
    assert "whisperx cannot start: preload failed: model 'large-v3' not found" in body["error"], body
    assert int(answer.headers["Retry-After"]) >= 1
    wait_until(lambda: not running("whisperx"), 60, "the proxy to stop the failed whisperx container")

    # Within the back-off: the same answer at once, and the container is not started again.
    status = deployment.proxy_status()[HOSTS["whisperx"]]
    assert status["failedStartsInARow"] == 1 and "model 'large-v3' not found" in status["lastError"]
    again = _models_answer(deployment, "whisperx")
    assert again.status_code == 503 and "model 'large-v3' not found" in again.json()["error"]
    assert not running("whisperx") and deployment.proxy_status()[HOSTS["whisperx"]]["wakes"] == 1
