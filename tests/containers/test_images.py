"""The images `make images` builds: the tags, a non-root user, a HEALTHCHECK, and no trace of pip's CA bundle.

The CA bundle is a BuildKit secret: mounted for the pip steps, never written to a layer. A bundle identical to
Debian's own could not be told apart from the image's ca-certificates, so one test builds with a canary: the host's
bundle plus a certificate made for the test, then searches the image's history, configuration and every file for it.
The canary build is the proxy's image (the smallest, so the uncached build stays short); the services' Dockerfiles
mount the secret the same way (`RUN --mount=type=secret,id=pipca`, PIP_CERT set inside that RUN only).
"""

from __future__ import annotations

import json
import os
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.containers.conftest import BuiltImages
from tests.containers.docker_cli import PREFIX, SERVICES, docker, inspect
from tests.support import ROOT

pytestmark = [pytest.mark.docker, pytest.mark.stack]  # stack: image builds are slow, `make test-fast` leaves them out


@pytest.mark.timeout(2400)
def test_make_images_tags_latest_and_the_commit(built_images: BuiltImages) -> None:
    for service in SERVICES:
        latest = inspect(f"{PREFIX}/{service}:latest")
        by_commit = inspect(f"{PREFIX}/{service}:{built_images.commit}")
        assert latest is not None and by_commit is not None, f"{service}: latest and :{built_images.commit} expected"
        assert latest["Id"] == by_commit["Id"]


@pytest.mark.parametrize("service", SERVICES)
def test_images_run_as_a_non_root_user_with_a_healthcheck(built_images: BuiltImages, service: str) -> None:
    config = (inspect(f"{PREFIX}/{service}:latest") or {})["Config"]
    assert config["User"] not in ("", "root", "0"), config["User"]
    assert config["Healthcheck"]["Test"][0] == "CMD"
    assert not [e for e in config["Env"] if e.startswith(("PIP_CERT=", "SSL_CERT_FILE=", "REQUESTS_CA_BUNDLE="))]
    uid = docker("run", "--rm", "--entrypoint", "id", f"{PREFIX}/{service}:latest", "-u").stdout.strip()
    assert uid == "10001"


def _image_files(image: str) -> Iterator[tuple[str, bytes]]:
    """(path, content) of every regular file in the image, from `docker export` of a container never started."""
    container = docker("create", image).stdout.strip()
    try:
        export = subprocess.Popen(["docker", "export", container], stdout=subprocess.PIPE)
        assert export.stdout is not None
        with tarfile.open(fileobj=export.stdout, mode="r|") as archive:
            for member in archive:
                if member.isfile():
                    handle = archive.extractfile(member)
                    yield member.name, handle.read() if handle else b""
        assert export.wait() == 0
    finally:
        docker("rm", "-f", container, check=False)


def _pip_ca_bundle() -> Path | None:
    pip = [str(ROOT / ".venv" / "bin" / "pip"), "config", "get", "global.cert"]
    result = subprocess.run(pip, capture_output=True, text=True)
    configured = os.environ.get("PIP_CERT") or result.stdout.strip()
    return Path(configured) if configured else None


@pytest.mark.timeout(900)
def test_the_ca_bundle_leaves_no_trace_in_the_image(built_images: BuiltImages, tmp_path: Path) -> None:
    key, cert = tmp_path / "canary.key", tmp_path / "canary.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=pip-ca-canary",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    canary_lines = [line for line in cert.read_text().splitlines() if line and not line.startswith("-----")]
    canary = max(canary_lines, key=len).encode()  # a line of the certificate's base64 body, found nowhere else
    host_bundle = _pip_ca_bundle()
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes((host_bundle.read_bytes() if host_bundle and host_bundle.is_file() else b"") + cert.read_bytes())

    prefix = "whisper-platform-ca-canary"
    env = {**os.environ, "IMAGE_PREFIX": prefix, "PIP_CA_BUNDLE": str(bundle), "PYTHON_IMAGE": built_images.base}
    image = f"{prefix}/autostart:latest"
    try:
        build = subprocess.run(
            [str(ROOT / "scripts" / "build-images.sh"), "--no-cache", "autostart"],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=840,
        )  # fmt: skip
        assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
        assert f"pip trusts {bundle} in the build" in build.stdout + build.stderr

        history = docker("history", "--no-trunc", "--format", "{{.CreatedBy}}", image).stdout
        assert canary.decode() not in history and "BEGIN CERTIFICATE" not in history
        assert str(bundle) not in history
        assert canary.decode() not in json.dumps(inspect(image))
        names, carriers = [], []
        for name, content in _image_files(image):
            names.append(name)
            if canary in content:
                carriers.append(name)
        assert len(names) > 1000  # the whole image was read
        assert carriers == [], f"the CA bundle reached the image: {carriers}"
        assert not [name for name in names if name.startswith("run/secrets/")]
    finally:
        for tag in docker("images", "--format", "{{.Repository}}:{{.Tag}}", f"{prefix}/*").stdout.split():
            docker("rmi", "-f", tag, check=False)


def test_the_build_of_the_base_image_needs_no_docker_hub(built_images: BuiltImages) -> None:
    """Where python:3.11-slim-bookworm cannot be pulled (this machine), make images makes its base from Debian."""
    if built_images.base == "python:3.11-slim-bookworm":
        pytest.skip("Docker Hub's python image was available: the Debian-made base was not needed")
    assert built_images.base == "whisper-platform/python-base:3.11-bookworm"
    version = docker("run", "--rm", built_images.base, "python3.11", "--version").stdout
    assert version.startswith("Python 3.11.")
    os_release = docker("run", "--rm", built_images.base, "cat", "/etc/os-release").stdout
    assert "VERSION_CODENAME=bookworm" in os_release


def test_the_proxy_image_checks_its_config_read_only_and_not_root(built_images: BuiltImages) -> None:
    """The container form of the proxy (docs: "As a container") starts as uid 10001 on a read-only root."""
    result = docker(
        "run", "--rm", "--read-only", "--cap-drop", "ALL", "--network", "none", f"{PREFIX}/autostart:latest",
        "--config", "/etc/autostart/config.json", "--check-config",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    uid = docker("run", "--rm", "--entrypoint", "id", f"{PREFIX}/autostart:latest", "-u").stdout.strip()
    assert uid == "10001"
