"""Which model each service of the Docker deployment will load, and whether it can (what `make up` prints).

The answer comes from the service itself: `python -m whisper_common.model_check` runs inside the service's image with
the container's own settings and volumes (`--volumes-from`) and no network, so "embedded", "cache" and "directory"
mean exactly what the service will find. A model that is none of these is downloaded on the first start; that needs
the Hugging Face Hub, which is asked from this host (the containers share its way out).
"""

from __future__ import annotations

import json
import socket
import subprocess
from dataclasses import dataclass

HUB = ("huggingface.co", 443)
HUB_TIMEOUT_SECONDS = 5.0


@dataclass(frozen=True)
class ModelPlan:
    service: str
    model: str
    source: str | None  # embedded | directory | cache | None (needs a download)


def container_env(container: str) -> dict[str, str]:
    """The container's environment; an entry without `=` (compose's "pass it when set", here unset) is not set."""
    result = _docker("inspect", "-f", "{{json .Config.Env}}", container)
    return dict(item.split("=", 1) for item in json.loads(result) if "=" in item)


def plans(service: str, container: str) -> list[ModelPlan]:
    """Asks the service's image, with the container's settings and volumes, what it would load."""
    image = _docker("inspect", "-f", "{{.Config.Image}}", container).strip()
    env_args: list[str] = []
    for name, value in container_env(container).items():
        env_args += ["-e", f"{name}={value}"]
    output = _docker(
        "run", "--rm", "--network", "none", "--volumes-from", container, "--read-only", "--tmpfs", "/tmp",
        "--cap-drop", "ALL", *env_args, "-e", "HF_HUB_OFFLINE=1", "--entrypoint", "python", image,
        "-m", "whisper_common.model_check",
    )  # fmt: skip
    return [ModelPlan(service, line["model"], line["source"]) for line in map(json.loads, output.splitlines()) if line]


def hub_reachable() -> bool:
    try:
        with socket.create_connection(HUB, timeout=HUB_TIMEOUT_SECONDS):
            return True
    except OSError:
        return False


def describe(plan: ModelPlan, offline: bool, hub: bool) -> tuple[str, bool]:
    """A line for the operator, and whether it is a warning (the first start will fail)."""
    where = {
        "embedded": "embedded in the image",
        "directory": "a local folder in the container",
        "cache": "already in its model-cache volume",
    }
    if plan.source is not None:
        return f"{plan.service} will load model {plan.model!r} ({where[plan.source]})", False
    if offline:
        why = "HF_HUB_OFFLINE=1 is set for it"
    elif not hub:
        why = f"{HUB[0]} cannot be reached from this host"
    else:
        return (f"{plan.service} will load model {plan.model!r}: not in the image or its model-cache volume yet; it is "
                f"downloaded from {HUB[0]} on the first start (that request waits for the download)"), False
    return (
        f"warning: {plan.service} will load model {plan.model!r}, which is neither in the image nor in its model-cache "
        f"volume, and {why}: its first start will fail and requests will get 503 '{plan.service} cannot start'. "
        f"Use the embedded model (WHISPER__MODEL=tiny.en in {plan.service}/.env) or fill the cache "
        f"(docs/deployment.md, air-gapped sites)."
    ), True


def _docker(*args: str) -> str:
    result = subprocess.run(["docker", *args], capture_output=True, text=True, check=False, timeout=120)
    if result.returncode != 0:
        raise RuntimeError(f"docker {args[0]} failed: {result.stderr.strip()[-500:]}")
    return result.stdout
