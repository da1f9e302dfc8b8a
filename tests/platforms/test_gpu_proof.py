"""bench/gpu_proof.py without a GPU: the parts that run here.

Run: the folder of wheels is made for real (`wheels`, from the package index) with the proxy's small extra instead of
the services' (the same code path: resolve under constraints.txt, leave out the PyTorch family, download wheels for
the target CPython, add the project's wheel and the script), and for this interpreter's version, so that the offline
install step of `run` can be run here too. Then `run` on this machine, which has no NVIDIA GPU, must stop in one line
before it makes anything. Not run here: `run` past that line (installing the services' wheels on the GPU machine, the
services on the GPU, the figures) - no GPU is available to this suite.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench import gpu_proof
from tests.support import ROOT, require

SCRIPT = ROOT / "bench" / "gpu_proof.py"
PYTHON_VERSION = "%d.%d" % sys.version_info[:2]


def _proof(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("gpu-proof") / "wheels"
    made = _proof("wheels", str(folder), "--extras", "autostart", "--python-version", PYTHON_VERSION, timeout=900)
    assert made.returncode == 0, made.stdout[-2000:] + made.stderr[-3000:]
    return folder


@pytest.mark.timeout(1200)
def test_wheels_holds_the_resolved_pins_for_the_target_python_and_the_script(wheels: Path) -> None:
    manifest = json.loads((wheels / "gpu-proof-manifest.json").read_text())
    assert manifest["python_version"] == PYTHON_VERSION
    assert {"aiohttp==3.14.5", "docker==7.2.0", "pydantic-settings==2.16.3"} <= set(manifest["packages"])
    files = [path.name for path in wheels.iterdir()]
    assert len([name for name in files if name.startswith("whisper_platform-")]) == 1
    assert (wheels / "gpu_proof.py").read_text() == SCRIPT.read_text()
    tag = "cp" + PYTHON_VERSION.replace(".", "")
    compiled = [name for name in files if name.endswith(".whl") and "-cp3" in name]
    assert compiled and all(f"-{tag}-" in name or "-abi3-" in name for name in compiled), compiled
    for package in manifest["packages"]:  # one file per pinned package
        name, version = package.split("==")
        stem = name.replace("-", "_").lower()
        assert any(f.lower().replace("-", "_").startswith(f"{stem}_{version}") for f in files), package


def test_the_pytorch_family_is_left_out_but_ctranslate2s_cuda_libraries_kept() -> None:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        name, _, version = line.split(";")[0].strip().partition("==")
        if version:
            pins[gpu_proof.normal(name)] = version
    chosen = dict(gpu_proof.wanted(sorted(pins.items())))
    for gone in ("torch", "torchaudio", "triton", "nvidia-nccl-cu12", "nvidia-cuda-runtime-cu12"):
        assert gone in pins and gone not in chosen, gone
    for kept in ("nvidia-cublas-cu12", "nvidia-cudnn-cu12", "ctranslate2", "faster-whisper", "whisperx", "numpy"):
        assert chosen.get(kept) == pins[kept], kept


@pytest.mark.timeout(600)
def test_a_package_without_wheels_comes_as_its_source(tmp_path: Path) -> None:
    source_only = gpu_proof.fetch([("webrtcvad", "2.0.10")], tmp_path, sys.executable, "3.12")
    assert source_only == ["webrtcvad==2.0.10"]
    assert [path.name for path in tmp_path.iterdir()] == ["webrtcvad-2.0.10.tar.gz"]


@pytest.mark.timeout(600)
def test_the_folder_installs_without_an_index(wheels: Path, tmp_path: Path) -> None:
    """`run`'s install step: a venv that sees this interpreter's packages, the folder's wheels put in with --no-index."""
    with (tmp_path / "install.log").open("w") as log:
        python = gpu_proof.make_environment(wheels, tmp_path, log)
    probe = subprocess.run([str(python), "-c", "import autostart, aiohttp, whisper_common, sys; print(autostart.__file__)"],
                           capture_output=True, text=True, cwd=tmp_path)  # fmt: skip
    assert probe.returncode == 0, probe.stderr
    assert str(tmp_path / "venv") in probe.stdout  # the folder's wheel, not this checkout


def test_run_without_a_gpu_stops_in_one_line_and_makes_nothing(wheels: Path, tmp_path: Path) -> None:
    require(not Path("/proc/driver/nvidia").exists(), "a machine without an NVIDIA driver")
    out = tmp_path / "proof"
    result = _proof("run", str(wheels), "--out", str(out))
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("gpu_proof: no NVIDIA GPU here ("), result.stderr
    assert "run it on a machine with one NVIDIA GPU" in lines[0]
    assert not out.exists()


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["run", "{missing}"], "is not a folder: make one with `python bench/gpu_proof.py wheels"),
        (["run", "{empty}"], "holds no whisper_platform wheel and manifest"),
        (["run", "{empty}", "--budget", "5"], "--budget 5 is out of range: 60 to 3600 seconds"),
    ],
    ids=["no-folder", "not-a-wheel-folder", "budget"],
)
def test_run_refuses_bad_arguments_in_one_line(tmp_path: Path, args: list[str], expected: str) -> None:
    (tmp_path / "empty").mkdir()
    filled = [arg.format(missing=tmp_path / "missing", empty=tmp_path / "empty") for arg in args]
    result = _proof(*filled, "--out", str(tmp_path / "proof"))
    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1 and expected in result.stderr, result.stderr
    assert not (tmp_path / "proof").exists()


def test_a_step_must_be_named() -> None:
    result = _proof()
    assert result.returncode == 2 and "the following arguments are required: step" in result.stderr
