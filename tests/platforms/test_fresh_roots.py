"""The README's two commands on a fresh server: `make run` in a fresh Debian 12 (Python 3.11) and Debian 13 (Python 3.13)
root, as the user a cloud image gives (sudo without a password), and the `curl` and `openai` examples it prints.

Nothing is prepared in the root beyond what a new server has (tests/platforms/fresh_roots.py): `make run` itself
installs Python, its venv module, the compiler webrtcvad needs, ffmpeg and Nginx, and the pinned packages. The roots,
pip's cache and apt's downloaded packages are cached between runs; what a run installs is thrown away with its
container. The ports are moved (RUN_*_PORT) because the containers share the host's network with the rest of the
suite; everything else is as the README prints it.

The refusals, each one line and nothing installed: a user without sudo rights, a root without network, a Debian whose
python3 is 3.14 (sid), and an unreachable package index. Python 3.12 is not run: neither Debian 12 nor 13 ships it and
PyPI has no interpreter (docs/quickstart.md); its resolution is checked in test_constraints.py.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import pytest

from tests.containers.docker_cli import engine_answers
from tests.platforms.fresh_roots import (
    LEG_DISK_BYTES,
    REPO,
    RootContainer,
    docker_free_bytes,
    error_lines,
    reclaim_build_cache,
    root_image,
    wait_for_line,
)
from tests.support import ARTIFACTS, free_port, require

pytestmark = [pytest.mark.docker, pytest.mark.stack]

# The pyannote sample the banner's examples send (no fixture folder beside a fresh checkout): two callers.
SAMPLE_WORDS = ("new jersey", "chicago")
LEGS = {"bookworm": "3.11", "trixie": "3.13"}


@pytest.fixture(scope="module")
def engine() -> None:
    require(engine_answers(), "a Docker Engine (apt-get install docker.io; scripts/ensure-dockerd.sh starts it)")
    require(shutil.which("mmdebstrap") is not None, "mmdebstrap (apt-get install mmdebstrap)")


@pytest.fixture
def root(request: pytest.FixtureRequest, engine: None) -> Iterator[RootContainer]:
    suite, network = request.param
    with RootContainer(suite, root_image(suite), network=network).running() as container:
        yield container


_RECORDING = threading.Lock()


def _record(leg: str, figures: dict[str, object]) -> None:
    with _RECORDING:
        _write_record(leg, figures)


def _write_record(leg: str, figures: dict[str, object]) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / "fresh-roots.json"
    known = json.loads(path.read_text()) if path.is_file() else {}
    known[leg] = figures
    path.write_text(json.dumps(known, indent=2) + "\n")


def _stop_make_run(root: RootContainer, process: subprocess.Popen[str]) -> str:
    """Ctrl-C for `make run`: SIGINT to run_local.py inside the container (a docker exec client passes no signal).
    Found through /proc: a fresh root has no procps (no pgrep, no ps); `[s]` keeps grep from finding itself."""
    pid = root.sh("grep -l -a '[s]cripts/run_local.py' /proc/[0-9]*/cmdline 2>/dev/null | head -n 1 | cut -d/ -f3").stdout.strip()
    assert pid, "make run's run_local.py is not running"
    root.sh(f"kill -INT {pid}")
    out, _ = process.communicate(timeout=120)
    return out


def _leg(suite: str) -> None:
    """One leg: a fresh root of `suite`, `make run` as printed, its examples, Ctrl-C, then the unreachable index."""
    with RootContainer(suite, root_image(suite), network="host").running() as root:
        _make_run_as_printed(root)


@pytest.fixture(scope="module")
def legs(engine: None) -> Iterator[dict[str, Future[None]]]:
    """Both legs at once, in threads, where Docker's disk holds both: each spends most of its time downloading and
    unpacking (about 4 GB of wheels into an 8 GB venv, apt's packages), not on the CPU, and one after the other they
    took 7 + 15 minutes here. The two roots share nothing but the host's network (their own ports and containers).

    Each leg needs up to LEG_DISK_BYTES on Docker's disk while it installs (a CI run ran out of space with both at
    once, after the image builds). Where the disk is short, Docker's build cache is dropped first (only time is lost),
    then the legs run one after the other if both still do not fit; a disk too small for one leg fails here, saying
    so, instead of in pip's middle."""
    workers = len(LEGS)
    free = docker_free_bytes()
    if free < workers * LEG_DISK_BYTES:
        print(f"fresh roots: Docker's disk is short ({free / 1e9:.1f} GB free), dropping its build cache: "
              f"{reclaim_build_cache()}")
        free = docker_free_bytes()
    assert free >= LEG_DISK_BYTES, (
        f"a fresh root's `make run` needs about {LEG_DISK_BYTES / 1e9:.0f} GB free on Docker's disk; it has "
        f"{free / 1e9:.1f} GB"
    )
    if free < workers * LEG_DISK_BYTES:
        workers = 1
        print(f"fresh roots: {free / 1e9:.1f} GB free on Docker's disk holds one leg at a time, not {len(LEGS)}")
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fresh-root") as pool:
        yield {suite: pool.submit(_leg, suite) for suite in LEGS}


@pytest.mark.timeout(3000)
@pytest.mark.parametrize("suite", list(LEGS))
def test_make_run_as_printed_on_a_fresh_root(legs: dict[str, Future[None]], suite: str) -> None:
    legs[suite].result(timeout=2900)  # the leg's own assertion, raised here


def _make_run_as_printed(root: RootContainer) -> None:
    repo = root.copy_repository("admin")
    ports = {name: str(free_port()) for name in ("HTTPS", "HTTP", "PROXY", "WHISPER_FASTER", "WHISPERX")}
    env = {f"RUN_{name}_PORT": port for name, port in ports.items()}
    started = time.monotonic()
    process = subprocess.Popen(
        [*root.exec_args("admin", repo, env), "make", "run"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    seen: list[str] = []
    try:
        up = wait_for_line(process, "print(client.audio.transcriptions", timeout=2400, seen=seen)
        assert up, "make run did not print its banner:\n" + "\n".join(seen[-60:])
        ready_seconds = time.monotonic() - started
        python = root.sh(f"{repo}/.venv/bin/python -c 'import sys; print(\"%d.%d\" % sys.version_info[:2])'")
        assert python.stdout.strip() == LEGS[root.suite]

        curls = [line.strip() for line in seen if line.strip().startswith("curl -sS")]
        assert len(curls) == 2, "\n".join(seen)
        for curl in curls:  # as printed: the quoting, the credentials file, the certificate, the *.localhost names
            answer = root.sh(curl, user="admin", workdir=repo, timeout=600)
            assert answer.returncode == 0, f"{curl}\n{answer.stdout}\n{answer.stderr}"
            text = answer.stdout.lower()
            assert all(word in text for word in SAMPLE_WORDS), f"{curl}\n{answer.stdout[:2000]}"

        example = next(line for line in seen if "Or with the openai client:" in line)
        command = example.split("Or with the openai client:", 1)[1].replace("[audio file]", "").strip()
        answer = root.sh(command, user="admin", workdir=repo, timeout=600)
        assert answer.returncode == 0, f"{command}\n{answer.stdout}\n{answer.stderr}"
        assert all(word in answer.stdout.lower() for word in SAMPLE_WORDS), answer.stdout

        venv_mb = int(root.sh(f"du -sm {repo}/.venv").stdout.split()[0])
        out = _stop_make_run(root, process)
        assert process.returncode == 0, out[-3000:]
        assert "stopped." in out
        _record(root.suite, {
            "python": LEGS[root.suite], "seconds_to_banner": round(ready_seconds), "venv_mb": venv_mb,
            "seconds_total": round(time.monotonic() - started),
        })  # fmt: skip

        # The same root, the package index out of reach: one line, and the environment is not left half-made.
        root.sh(f"rm -rf {repo}/.venv", user="admin")
        closed = free_port()
        offline = root.sh("make run", user="admin", workdir=repo, timeout=300,
                          env={**env, "PIP_INDEX_URL": f"http://127.0.0.1:{closed}/simple/"})  # fmt: skip
        assert offline.returncode != 0
        lines = error_lines(offline.stderr)
        assert len(lines) == 2 and "does not answer" in lines[0] and "PIP_INDEX_URL" in lines[0], offline.stderr
        assert lines[1] == "make run: removed the half-made .venv", offline.stderr
        assert root.sh(f"test -e {repo}/.venv").returncode != 0
    finally:
        if process.poll() is None:
            process.kill()


@pytest.mark.parametrize("root", [("trixie", "host")], indirect=True, ids=["trixie"])
def test_make_run_as_a_user_without_sudo_rights(root: RootContainer) -> None:
    repo = root.copy_repository("guest")
    result = root.sh("make run", user="guest", workdir=repo, timeout=300)
    assert result.returncode != 0
    lines = error_lines(result.stderr)
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("make run: installing Debian packages needs root and sudo asks guest for a password")
    assert "apt-get install python3 python3-venv" in lines[0]
    assert root.sh(f"test -e {repo}/.venv").returncode != 0
    assert not root.installed("python3") and not root.installed("nginx")


@pytest.mark.parametrize("root", [("bookworm", "none")], indirect=True, ids=["bookworm-offline"])
def test_make_run_without_network(root: RootContainer) -> None:
    repo = root.copy_repository("admin")
    result = root.sh("make run", user="admin", workdir=repo, timeout=300)
    assert result.returncode != 0
    lines = error_lines(result.stderr)
    assert len(lines) == 1, result.stderr
    assert re.match(r"make run: apt-get update could not reach the Debian mirror \(log: \S+\): connect", lines[0])
    assert root.sh(f"test -e {repo}/.venv").returncode != 0
    assert not root.installed("python3")


@pytest.mark.parametrize("root", [("sid", "host")], indirect=True, ids=["sid-python3.14"])
def test_make_run_on_a_debian_whose_python_is_3_14(root: RootContainer) -> None:
    """Debian unstable's python3 is 3.14 (seen 2026-11): refused before anything is installed."""
    repo = root.copy_repository("admin")
    result = root.sh("make run", user="admin", workdir=repo, timeout=600)
    candidate = root.sh("apt-cache policy python3 | sed -n 's/^ *Candidate: *\\([0-9]*\\.[0-9]*\\).*/\\1/p'").stdout
    if candidate.strip() in ("3.11", "3.12", "3.13"):
        pytest.skip(f"Debian unstable's python3 is {candidate.strip()} today, which the platform runs")
    assert result.returncode != 0
    lines = error_lines(result.stderr)
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"make run: this system's Python is {candidate.strip()} (Debian package python3)")
    assert "install one of them with its venv module" in lines[0]
    assert root.sh(f"test -e {repo}/.venv").returncode != 0
    assert not root.installed("python3") and not root.installed("nginx")


def test_roots_hold_only_what_a_fresh_server_has(engine: None) -> None:
    """The premise: no Python, no compiler, no Nginx in a root before `make run`; make, git, sudo are there."""
    with RootContainer("trixie", root_image("trixie"), network="none", caches=False).running() as container:
        for absent in ("python3", "gcc", "nginx", "ffmpeg", "curl"):
            assert not container.installed(absent), absent
        for present in ("make", "git", "sudo", "ca-certificates"):
            assert container.installed(present), present
        assert container.sh("test -d " + REPO.format(user="admin")).returncode != 0
