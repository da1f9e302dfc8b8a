"""The Docker deployment for real: `make images`, `make up`, requests through Nginx (TLS + basic auth) and the
auto-start proxy served by containers the proxy woke, the idle stop, a second wake, and `make down`.

Real everything: dockerd, the images built from the Dockerfiles, compose, the proxy as `make up` installs it (a
background process: no systemd here), Nginx, the embedded tiny.en model and the shared audio fixtures.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import jiwer
import pytest
from openai import OpenAI

from tests.containers.conftest import BuiltImages
from tests.containers.deployment import HOSTS, Deployment
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
    for container in CONTAINERS.values():
        if inspect(container) is not None:
            pytest.fail(f"a container named {container} exists already (a deployment on this engine?): not touching it")
    deployment = Deployment(tmp_path)
    deployment.write_nginx_conf()
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


@pytest.mark.timeout(2400)
def test_make_up_serves_requests_from_woken_containers_and_make_down_removes_them(deployment: Deployment) -> None:
    up = deployment.make("up")
    assert up.returncode == 0, up.stdout[-4000:] + up.stderr[-4000:]

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

    # 5. make down: no container, network or site of ours left; the proxy is gone.
    down = deployment.make("down")
    assert down.returncode == 0, down.stdout[-4000:] + down.stderr[-4000:]
    for container in CONTAINERS.values():
        assert inspect(container) is None, f"{container} survived make down"
    for project in projects:
        networks = docker("network", "ls", "-q", "--filter", f"label=com.docker.compose.project={project}").stdout
        assert networks.strip() == "", f"network of {project} survived make down"
    assert not [p.name for p in (deployment.nginx_dir / "sites-enabled").iterdir()]
    with pytest.raises(Exception):
        deployment.proxy_states()
