"""`make up` on a host that cannot run the deployment: it says what is wrong and what to do, exits non-zero, and
leaves nothing half-installed (no container, no proxy, no Nginx site).

"docker missing" and "compose missing" are made with PATH: a folder holding only the tools the script needs, and
for "compose missing" a `docker` that runs the real one but knows no `compose` (what an engine without the plugin
answers). The port and the build failures are real: a socket holds the port; the build's pip index is a local
server that has no packages. "Nginx's worker user does not exist" is Debian's nginx.conf with its `user` line naming
an account this host lacks, in a folder of its own (NGINX_DIR), since the host's own file must not be edited.

"Nothing installed" is measured against the host as it was before the test: our containers (id and start time) and
make up's files in the Nginx folders (mtime). The containers' names are fixed, so another session's deployment on
the same engine, or one an earlier test left behind, is there before and after and is not this make up's doing.
"""

from __future__ import annotations

import fcntl
import http.server
import shutil
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.containers.conftest import BuiltImages
from tests.containers.deployment import LOCK_PATH, MAKE_UP_FILES, NGINX_DIR, Deployment
from tests.containers.docker_cli import CONTAINERS, docker, inspect

pytestmark = [pytest.mark.docker, pytest.mark.stack]


# What was on the host before each test's make up (by the deployment's root): a failed make up must leave it as it was.
_BEFORE: dict[Path, dict[str, object]] = {}


def _host_state(deployment: Deployment) -> dict[str, object]:
    """Our two containers (id and start time: created, re-created or started shows) and make up's files in the host's
    Nginx folder and in the deployment's (mtime: written shows). Another session's deployment on this engine, or one an
    earlier test left, is part of the state, not something this make up installed."""
    state: dict[str, object] = {}
    for container in CONTAINERS.values():
        info = inspect(container)
        state[f"container {container}"] = (info["Id"], info["State"]["StartedAt"]) if info else None
    for folder in {NGINX_DIR, deployment.nginx_dir}:
        for name in MAKE_UP_FILES:
            path = folder / name
            state[f"file {path}"] = path.lstat().st_mtime_ns if path.exists() or path.is_symlink() else None
        sites = folder / "sites-enabled"
        state[f"sites {sites}"] = sorted(p.name for p in sites.iterdir() if "whisper" in p.name) if sites.is_dir() else []
    return state


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[Deployment]:
    """Holds the deployment lock the drills take (deployment.LOCK_PATH): another session's make up does not change the
    host between the test's look before and after."""
    with LOCK_PATH.open("a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            deployment = Deployment(tmp_path)
            _BEFORE[tmp_path] = _host_state(deployment)
            yield deployment
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _bin_dir(tmp_path: Path, tools: tuple[str, ...]) -> Path:
    directory = tmp_path / "bin"
    directory.mkdir(exist_ok=True)
    for tool in tools:
        found = shutil.which(tool)
        if found:
            (directory / tool).symlink_to(found)
    return directory


def _assert_nothing_installed(deployment: Deployment) -> None:
    before = _BEFORE.pop(deployment.root)
    after = _host_state(deployment)
    # A folder the test set after the fixture (its own Nginx folder) held none of make up's files.
    changed = {key: (before.get(key), value) for key, value in after.items()
               if before.get(key, [] if key.startswith("sites ") else None) != value}  # fmt: skip
    assert not changed, f"a failed make up created, started or wrote (before, after): {changed}"
    assert not (deployment.state_dir / "autostart.pid").exists(), "a failed make up left the proxy running"
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", deployment.proxy_port))  # nothing listens on the proxy's address


def test_make_up_without_docker_says_to_install_it(deployment: Deployment, tmp_path: Path) -> None:
    bin_dir = _bin_dir(tmp_path, ("dirname", "id"))
    result = deployment.script("compose-up.sh", {**deployment.env(), "PATH": str(bin_dir)})
    assert result.returncode == 1
    assert "docker is not installed" in result.stderr and "apt-get install docker.io" in result.stderr
    _assert_nothing_installed(deployment)


def test_make_up_without_compose_says_to_install_it(
    deployment: Deployment, tmp_path: Path, docker_engine: None
) -> None:
    bin_dir = _bin_dir(tmp_path, ("dirname", "id"))
    real_docker = shutil.which("docker")
    assert real_docker is not None
    (bin_dir / "docker").write_text(
        "#!/bin/sh\n"
        'if [ "$1" = compose ]; then echo "docker: \'compose\' is not a docker command." >&2; exit 1; fi\n'
        f'exec {real_docker} "$@"\n'
    )
    (bin_dir / "docker").chmod(0o755)
    result = deployment.script("compose-up.sh", {**deployment.env(), "PATH": str(bin_dir)})
    assert result.returncode == 1
    assert "Docker Compose is missing" in result.stderr and "docker-compose" in result.stderr
    _assert_nothing_installed(deployment)


def test_make_up_with_a_service_port_taken_names_the_port(deployment: Deployment, docker_engine: None) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", deployment.service_ports["whisperx"]))
        holder.listen()
        result = deployment.make("up")
    assert result.returncode != 0
    port = deployment.service_ports["whisperx"]
    assert f"port 127.0.0.1:{port} (for whisperx) is taken" in result.stderr and "WHISPERX_PORT" in result.stderr
    _assert_nothing_installed(deployment)


def test_make_up_with_the_proxy_address_taken_names_it(deployment: Deployment, docker_engine: None) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", deployment.proxy_port))
        holder.listen()
        result = deployment.make("up")
        assert result.returncode != 0
        assert f"127.0.0.1:{deployment.proxy_port} is taken" in result.stderr and "AUTOSTART_LISTEN" in result.stderr
    _assert_nothing_installed(deployment)


def test_make_up_with_a_missing_nginx_worker_user_names_it_and_changes_nothing(
    deployment: Deployment, tmp_path: Path, docker_engine: None
) -> None:
    stock = Path("/etc/nginx/nginx.conf")
    if not stock.is_file():
        pytest.skip("the host's Nginx (apt-get install nginx)")
    nginx_dir = tmp_path / "nginx"
    nginx_dir.mkdir()
    text = stock.read_text()
    assert "user www-data;" in text, "not Debian's nginx.conf"
    (nginx_dir / "nginx.conf").write_text(text.replace("user www-data;", "user whisper-no-such-user;"))
    deployment.nginx_dir = nginx_dir
    result = deployment.make("up")
    assert result.returncode != 0
    assert "Nginx's worker user 'whisper-no-such-user'" in result.stderr and "does not exist" in result.stderr
    assert "useradd --system" in result.stderr and "nothing was changed" in result.stderr
    _assert_nothing_installed(deployment)
    assert sorted(p.name for p in nginx_dir.iterdir()) == ["nginx.conf"]


@pytest.fixture
def empty_package_index() -> Iterator[str]:
    """A PyPI "simple" index that has no packages: every lookup is a 404, as on a mirror missing them."""

    class NotFound(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            self.send_error(404)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NotFound)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/simple"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.timeout(900)
def test_make_up_with_a_failing_image_build_installs_nothing(
    deployment: Deployment, built_images: BuiltImages, empty_package_index: str
) -> None:
    prefix = "whisper-platform-failing-build"
    env = {
        **deployment.env(),
        # Images under another name are missing, so make up builds them; the base is the one make images used.
        "IMAGE_PREFIX": prefix,
        "PYTHON_IMAGE": built_images.base,
        "PIP_INDEX_URL": empty_package_index,
    }
    try:
        result = deployment.make("up", env=env)
        assert result.returncode != 0
        assert f"building {prefix}/whisper-faster failed" in result.stderr
        assert "the image build failed (see above): nothing was installed" in result.stderr
        _assert_nothing_installed(deployment)
        assert docker("images", "-q", f"{prefix}/*").stdout.strip() == "", "a failed build was tagged"
    finally:
        for image in docker("images", "--format", "{{.Repository}}:{{.Tag}}", f"{prefix}/*").stdout.split():
            docker("rmi", "-f", image, check=False)
