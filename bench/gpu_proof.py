"""The GPU proof: both services transcribing on one NVIDIA GPU, offline, installed from a folder of wheels.

Two steps, on two machines (docs/deployment.md#gpu-hosts):

    python bench/gpu_proof.py wheels OUT                # here, with the package index: OUT gets the wheels and this script
    python3 OUT/gpu_proof.py run OUT [--out DIR]        # on the GPU machine, with no network: installs, runs, measures

`wheels` resolves the services' extras (whisper-faster, whisperx and cuda: cuBLAS 12 and cuDNN 9, which CTranslate2 4.x
loads) against constraints.txt, leaves out the PyTorch family (torch, torchaudio, torchvision, torchcodec, triton and
torch's own NVIDIA libraries: the GPU machine has a PyTorch built for its CUDA), and downloads the rest as wheels for
CPython --python-version (3.12) on manylinux x86_64; a package published as source only (webrtcvad) comes as its
source with setuptools and wheel, built on the GPU machine. The project's own wheel and this script go in too.

`run` is for a machine with one NVIDIA GPU, its driver (CUDA 13 is fine: CTranslate2 brings its CUDA 12 libraries),
Python 3.12 with PyTorch already installed (and torchaudio: whisperx needs it), and no network. It stops with one line when there is no GPU or the folder
is not one `wheels` made. Otherwise it makes a virtual environment beside the output that sees the interpreter's own
packages (its PyTorch), installs the folder's wheels into it without an index, and runs each service in turn on the
GPU (WHISPER__INFERENCE_DEVICE=cuda) with the largest Whisper model it can load offline: --model ids first, then the
CTranslate2 Whisper models in the Hugging Face cache, largest first, then the embedded tiny.en; a model that does not
load (missing, out of memory) is noted and the next one tried. The compute type is the best the GPU supports of
float16, int8_float16, float32 (CTranslate2's list for the device). The audio is pyannote.audio's 30 s two-speaker
sample (installed with whisperx) and any --audio files. For each service it writes the x-realtime (audio seconds per
wall second, median of the timed requests after a warm-up), the GPU memory of the service's process (nvidia-smi,
peak while it ran), the compute type and the model, into DIR/gpu-proof.json and DIR/gpu-proof.md (the table for
docs/benchmarks.md). --budget (540 s) bounds the whole run: installing, loading and the timed requests, so it ends
within 10 minutes.

The `run` step uses only the standard library: it starts before anything is installed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import site
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

PROG = "gpu_proof"
OWN_WHEEL = "whisper_platform-*.whl"
# Installed on the GPU machine already, built for its CUDA: never taken from the folder.
TORCH_FAMILY = re.compile(r"^(torch|torchaudio|torchvision|torchcodec|triton|nvidia-.*)$")
# Kept although they match TORCH_FAMILY: CTranslate2's CUDA 12 libraries (the extra `cuda`).
CTRANSLATE2_CUDA = {"nvidia-cublas-cu12", "nvidia-cudnn-cu12"}
# Whisper models by size, largest first (a name is matched at the end of a hub id: Systran/faster-whisper-large-v3).
SIZES = ["large-v3", "large-v2", "large-v1", "large", "distil-large-v3", "large-v3-turbo", "turbo", "distil-large-v2",
         "medium", "medium.en", "distil-medium.en", "small", "small.en", "distil-small.en", "base", "base.en", "tiny",
         "tiny.en"]  # fmt: skip
COMPUTE_TYPES = ["float16", "int8_float16", "float32"]
SERVICES = {"whisper-faster": "whisper_faster", "whisperx": "whisperx_api"}


class Refusal(Exception):
    """A reason to stop before anything is installed or started: one line, exit status 2."""


# --- wheels: on a machine with the package index -----------------------------------------------------------------------


def normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def resolve(root: Path, extras: str, python: str) -> list[tuple[str, str]]:
    """The (name, version) pairs pip resolves for the project's extras under constraints.txt (this interpreter's
    markers; constraints.txt pins one tree for 3.11 to 3.13), the project itself left out."""
    report = root / ".cache" / f"gpu-proof-resolve-{uuid.uuid4().hex[:8]}.json"
    report.parent.mkdir(exist_ok=True)
    try:
        subprocess.run(
            [python, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet", "--report", str(report),
             "-c", "constraints.txt", f".[{extras}]"],
            cwd=root, check=True, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        installed = json.loads(report.read_text())["install"]
    finally:
        report.unlink(missing_ok=True)
    pins = [(normal(item["metadata"]["name"]), item["metadata"]["version"]) for item in installed]
    return sorted(pin for pin in pins if pin[0] != "whisper-platform")


def wanted(pins: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(name, version) for name, version in pins if not TORCH_FAMILY.match(name) or name in CTRANSLATE2_CUDA]


def fetch(pins: list[tuple[str, str]], out: Path, python: str, python_version: str) -> list[str]:
    """Each pin as a wheel for the target CPython on manylinux x86_64, else as its source; returns the source-only ones."""
    tag = python_version.replace(".", "")
    platforms = [f"--platform=manylinux_2_{minor}_x86_64" for minor in (28, 27, 17, 12, 5)]
    platforms += ["--platform=manylinux2014_x86_64", "--platform=manylinux2010_x86_64", "--platform=linux_x86_64"]
    binary = [python, "-m", "pip", "download", "--quiet", "--no-deps", "--dest", str(out), "--only-binary=:all:",
              f"--python-version={python_version}", "--implementation=cp", f"--abi=cp{tag}", "--abi=abi3",
              "--abi=none", *platforms]  # fmt: skip
    requirements = [f"{name}=={version}" for name, version in pins]
    if len(requirements) > 1 and subprocess.run([*binary, *requirements], stderr=subprocess.DEVNULL).returncode == 0:
        return []
    source_only = []
    for requirement in requirements:  # one at a time: which of them has no wheel
        if subprocess.run([*binary, requirement], stderr=subprocess.DEVNULL).returncode == 0:
            continue
        subprocess.run([python, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary=:all:", "--dest",
                        str(out), requirement], check=True)  # fmt: skip
        source_only.append(requirement)
    return source_only


def build_wheels(args: argparse.Namespace) -> int:
    root = Path(__file__).resolve().parent.parent
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    python = sys.executable
    pins = wanted(resolve(root, args.extras, python))
    print(f"{PROG}: {len(pins)} packages for CPython {args.python_version} into {out}", flush=True)
    source_only = fetch(pins, out, python, args.python_version)
    if source_only:  # built on the GPU machine, without an index: the build backend comes along
        build = [f"{name}=={version}" for name, version in resolve_build_tools(root)]
        fetch(build, out, python, args.python_version)
    subprocess.run([python, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(out), str(root)],
                   check=True)  # fmt: skip
    shutil.copy2(Path(__file__), out / "gpu_proof.py")
    (out / "gpu-proof-manifest.json").write_text(json.dumps({
        "python_version": args.python_version, "extras": args.extras, "packages": [f"{n}=={v}" for n, v in pins],
        "source_only": source_only, "left_out": "the PyTorch family: the GPU machine's own",
    }, indent=2) + "\n")  # fmt: skip
    print(f"{PROG}: wrote {len(list(out.iterdir()))} files; on the GPU machine: python3 gpu_proof.py run {out.name}")
    return 0


def resolve_build_tools(root: Path) -> list[tuple[str, str]]:
    """setuptools as constraints.txt pins it, and wheel: what a source-only package builds with offline."""
    pins = {}
    for line in (root / "constraints.txt").read_text().splitlines():
        name, _, version = line.split(";")[0].strip().partition("==")
        if normal(name) in ("setuptools", "wheel") and version:
            pins[normal(name)] = version
    pins.setdefault("wheel", "0.45.1")
    return sorted(pins.items())


# --- run: on the GPU machine, offline -----------------------------------------------------------------------------------


@dataclass
class ServiceResult:
    service: str
    model: str = ""
    compute_type: str = ""
    load_seconds: float = 0.0
    x_realtime: float | None = None
    requests: int = 0
    audio_seconds: float = 0.0
    gpu_memory_mib: int | None = None
    words: str = ""
    tried: list[str] = field(default_factory=list)
    error: str = ""


def check_wheel_folder(folder: Path) -> None:
    if not folder.is_dir():
        raise Refusal(f"{folder} is not a folder: make one with `python bench/gpu_proof.py wheels {folder}` on a "
                      "machine with the package index, and copy it here")  # fmt: skip
    if not list(folder.glob(OWN_WHEEL)) or not (folder / "gpu-proof-manifest.json").is_file():
        raise Refusal(f"{folder} holds no whisper_platform wheel and manifest: it is not a folder `gpu_proof.py wheels` "
                      "made")  # fmt: skip


def gpus() -> list[str]:
    """The NVIDIA GPUs nvidia-smi lists; a Refusal when there is none."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        raise Refusal("no NVIDIA GPU here (nvidia-smi is not installed): run it on a machine with one NVIDIA GPU and "
                      "its driver")  # fmt: skip
    listed = subprocess.run([smi, "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    names = [line.strip() for line in listed.stdout.splitlines() if line.strip()]
    if listed.returncode != 0 or not names:
        reason = (listed.stderr or listed.stdout).strip().splitlines()[:1] or ["no GPU listed"]
        raise Refusal(f"no NVIDIA GPU here (nvidia-smi: {reason[0]}): run it on a machine with one NVIDIA GPU and "
                      "its driver")  # fmt: skip
    return names


def torch_facts(python: str) -> dict[str, object]:
    probe = ("import importlib.util, json, torch; print(json.dumps({'torch': torch.__version__, 'cuda': torch.version.cuda, "
             "'available': torch.cuda.is_available(), 'torchaudio': importlib.util.find_spec('torchaudio') is not None}))")
    result = subprocess.run([python, "-c", probe], capture_output=True, text=True, timeout=300)
    if result.returncode != 0:
        raise Refusal(f"{python} has no PyTorch ({(result.stderr.strip().splitlines() or ['import failed'])[-1]}): "
                      "install the PyTorch build for this machine's CUDA, then run again")  # fmt: skip
    facts = json.loads(result.stdout.strip().splitlines()[-1])
    if not facts["available"]:
        raise Refusal(f"PyTorch {facts['torch']} here sees no CUDA device (torch.cuda.is_available() is False): "
                      "a CUDA build of PyTorch and a working NVIDIA driver are needed")  # fmt: skip
    return facts


def make_environment(folder: Path, work: Path, log) -> Path:  # noqa: ANN001 - a text file
    """A venv that sees this interpreter's packages (its PyTorch), with the folder's wheels installed without an index."""
    venv = work / "venv"
    if venv.exists():
        shutil.rmtree(venv)
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    python = venv / "bin" / "python"
    own = subprocess.run([str(python), "-c", "import site; print(site.getsitepackages()[0])"], capture_output=True,
                          text=True, check=True).stdout.strip()  # fmt: skip
    # Run from a venv itself: its site-packages (where PyTorch is) after the new venv's own.
    Path(own, "gpu_proof_parent.pth").write_text("".join(p + "\n" for p in site.getsitepackages()))
    pip = [str(python), "-m", "pip", "install", "--no-index", "--no-deps", "--find-links", str(folder),
           "--disable-pip-version-check"]  # fmt: skip
    wheels = sorted(str(p) for p in folder.glob("*.whl"))
    subprocess.run([*pip, *wheels], check=True, stdout=log, stderr=subprocess.STDOUT)
    for source in sorted(folder.glob("*.tar.gz")):  # webrtcvad: needs a compiler and Python.h; the proof goes on without
        built = subprocess.run([*pip, "--no-build-isolation", str(source)], stdout=log, stderr=subprocess.STDOUT)
        log.write(f"{PROG}: building {source.name}: {'ok' if built.returncode == 0 else 'failed'}\n")
    return python


def venv_probe(python: Path, code: str) -> str:
    return subprocess.run([str(python), "-c", code], capture_output=True, text=True, timeout=300, check=True).stdout.strip()


def compute_type(python: Path) -> str:
    supported = json.loads(venv_probe(python, "import ctranslate2, json; "
                                              "print(json.dumps(sorted(ctranslate2.get_supported_compute_types('cuda'))))"))
    return next(kind for kind in COMPUTE_TYPES if kind in supported or kind == "float32")


def model_candidates(python: Path, requested: list[str]) -> list[str]:
    cached = json.loads(venv_probe(python, "import json; from whisper_common.model_catalog import cached_hub_models; "
                                           "print(json.dumps(cached_hub_models()))"))

    def size(model_id: str) -> int:
        tail = model_id.rsplit("/", 1)[-1].lower()
        return next((rank for rank, name in enumerate(SIZES) if tail.endswith(name)), len(SIZES))

    return list(dict.fromkeys([*requested, *sorted(cached, key=size), "tiny.en"]))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def gpu_memory_mib(pid: int) -> int | None:
    result = subprocess.run(["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
                            capture_output=True, text=True, timeout=30)  # fmt: skip
    for line in result.stdout.splitlines():
        fields = [part.strip() for part in line.split(",")]
        if len(fields) == 2 and fields[0] == str(pid) and fields[1].isdigit():
            return int(fields[1])
    return None


class MemoryWatch(threading.Thread):
    """The peak GPU memory nvidia-smi reports for one process, sampled every half second."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak, self.stopped = pid, None, threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            used = gpu_memory_mib(self.pid)
            if used is not None and (self.peak is None or used > self.peak):
                self.peak = used
            self.stopped.wait(0.5)


def start(python: Path, service: str, model: str, kind: str, work: Path, deadline: float) -> tuple[subprocess.Popen, int]:
    port = free_port()
    env = {**os.environ, "UVICORN_HOST": "127.0.0.1", "UVICORN_PORT": str(port), "WHISPER__MODEL": model,
           "PRELOAD_MODELS": model, "WHISPER__INFERENCE_DEVICE": "cuda", "WHISPER__COMPUTE_TYPE": kind,
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "LOG_LEVEL": "warning",
           "DATA_DIR": str(work / "data" / service)}  # fmt: skip
    log = (work / f"{service}.log").open("ab")
    process = subprocess.Popen([str(python), "-m", SERVICES[service]], env=env, cwd=work, stdout=log,
                               stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"exited with status {process.returncode} (log: {work / (service + '.log')})")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health/ready", timeout=5) as answer:
                if answer.status == 200:
                    return process, port
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(1)
    stop(process)
    raise RuntimeError("not ready before the budget ran out")


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def transcribe(port: int, audio: Path) -> tuple[float, dict]:
    """One request on the OpenAI route (verbose_json: the audio's duration comes back); (wall seconds, answer)."""
    boundary = uuid.uuid4().hex
    parts = [(b"response_format", b"verbose_json"), (b"file", audio.read_bytes())]
    body = b""
    for name, value in parts:
        filename = f'; filename="{audio.name}"'.encode() if name == b"file" else b""
        body += b"--" + boundary.encode() + b"\r\nContent-Disposition: form-data; name=\"" + name + b"\"" + filename
        body += b"\r\n\r\n" + value + b"\r\n"
    body += b"--" + boundary.encode() + b"--\r\n"
    request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/audio/transcriptions", data=body, method="POST",
                                     headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})  # fmt: skip
    started = time.monotonic()
    with urllib.request.urlopen(request, timeout=600) as answer:
        result = json.loads(answer.read())
    return time.monotonic() - started, result


def measure(python: Path, service: str, models: list[str], kind: str, audio: list[Path], work: Path,
            deadline: float) -> ServiceResult:  # fmt: skip
    result = ServiceResult(service, compute_type=kind)
    for model in models:
        if time.monotonic() > deadline:
            break
        result.tried.append(model)
        started = time.monotonic()
        try:
            process, port = start(python, service, model, kind, work, deadline)
        except RuntimeError as exc:
            result.error = f"{model}: {exc}"
            continue
        result.model, result.load_seconds, result.error = model, round(time.monotonic() - started, 1), ""
        watch = MemoryWatch(process.pid)
        watch.start()
        try:
            seconds, answer = transcribe(port, audio[0])  # warm-up
            result.words = str(answer.get("text", ""))[:200]
            walls, durations = [], []
            while time.monotonic() + 2 * seconds < deadline and len(walls) < 5 * len(audio):
                clip = audio[len(walls) % len(audio)]
                seconds, answer = transcribe(port, clip)
                walls.append(seconds)
                durations.append(float(answer.get("duration") or 0.0))
            if walls:
                result.x_realtime = round(statistics.median(d / w for d, w in zip(durations, walls, strict=True)), 1)
            result.requests, result.audio_seconds = len(walls), round(sum(durations), 1)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            result.error = f"{model}: a request failed: {exc}"
        finally:
            watch.stopped.set()
            watch.join()
            result.gpu_memory_mib = watch.peak
            stop(process)
        return result
    return result


def run_proof(args: argparse.Namespace) -> int:
    started = time.monotonic()
    deadline = started + args.budget
    folder = Path(args.wheels).resolve()
    check_wheel_folder(folder)
    names = gpus()
    facts = torch_facts(sys.executable)
    if subprocess.run([sys.executable, "-c", "import ensurepip, venv"], capture_output=True).returncode != 0:
        raise Refusal(f"{sys.executable} has no venv module: install it (Debian/Ubuntu: python3-venv), then run again")
    work = Path(args.out).resolve()
    work.mkdir(parents=True, exist_ok=True)
    print(f"{PROG}: {names[0]}; PyTorch {facts['torch']} (CUDA {facts['cuda']}); installing {folder.name}", flush=True)
    with (work / "install.log").open("w") as log:
        python = make_environment(folder, work, log)
    install_seconds = round(time.monotonic() - started, 1)
    kind = compute_type(python)
    models = model_candidates(python, args.model)
    sample = Path(venv_probe(python, "import importlib.util, pathlib; spec = importlib.util.find_spec('pyannote.audio'); "
                                     "print(pathlib.Path(next(iter(spec.submodule_search_locations)), 'sample', 'sample.wav'))"))
    audio = [sample, *(Path(a).resolve() for a in args.audio)]
    results = []
    for index, service in enumerate(SERVICES):
        share = (deadline - time.monotonic()) / (len(SERVICES) - index)  # what is left, shared by the services to come
        results.append(measure(python, service, models, kind, audio, work, time.monotonic() + share))
        print(f"{PROG}: {service}: {asdict(results[-1])}", flush=True)
    report = {
        "gpu": names, "torch": facts, "python": sys.version.split()[0], "install_seconds": install_seconds,
        "audio": [str(a) for a in audio], "seconds": round(time.monotonic() - started, 1),
        "services": [asdict(r) for r in results],
    }  # fmt: skip
    (work / "gpu-proof.json").write_text(json.dumps(report, indent=2) + "\n")
    rows = [f"| {r.service} | {r.model or '-'} | {r.compute_type} | {r.x_realtime if r.x_realtime is not None else '-'} "
            f"| {r.gpu_memory_mib if r.gpu_memory_mib is not None else '-'} | {r.load_seconds} | {r.requests} | "
            f"{r.error or 'ok'} |" for r in results]  # fmt: skip
    (work / "gpu-proof.md").write_text(
        f"GPU: {names[0]}; PyTorch {facts['torch']} (CUDA {facts['cuda']}); Python {report['python']}; "
        f"install {install_seconds} s; whole run {report['seconds']} s.\n\n"
        "| service | model | compute type | x-realtime | GPU memory (MiB) | load (s) | timed requests | status |\n"
        "|---|---|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n"
    )
    print((work / "gpu-proof.md").read_text())
    return 0 if all(r.x_realtime is not None for r in results) else 1


def parser() -> argparse.ArgumentParser:
    main = argparse.ArgumentParser(prog="gpu_proof.py", description=__doc__.split("\n\n")[0])
    steps = main.add_subparsers(dest="step", required=True)
    wheels = steps.add_parser("wheels", help="here, with the package index: the folder of wheels to copy to the GPU machine")
    wheels.add_argument("out", help="the folder to fill")
    wheels.add_argument("--python-version", default="3.12", help="the GPU machine's Python (3.12)")
    wheels.add_argument("--extras", default="whisper-faster,whisperx,cuda", help="the extras to resolve")
    wheels.set_defaults(handler=build_wheels)
    run = steps.add_parser("run", help="on the GPU machine, offline: install the folder's wheels, run, measure")
    run.add_argument("wheels", help="the folder `wheels` made")
    run.add_argument("--out", default="gpu-proof", help="where the environment, the logs and the results go")
    run.add_argument("--model", action="append", default=[], help="a model to try first (a local CTranslate2 folder "
                     "or a cached hub id); repeatable")  # fmt: skip
    run.add_argument("--audio", action="append", default=[], help="another audio file to time; repeatable")
    run.add_argument("--budget", type=float, default=540, help="seconds for the whole run (540)")
    run.set_defaults(handler=run_proof)
    return main


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.step == "run" and not 60 <= args.budget <= 3600:
        print(f"{PROG}: --budget {args.budget:g} is out of range: 60 to 3600 seconds", file=sys.stderr)
        return 2
    try:
        return int(args.handler(args))
    except Refusal as refusal:
        print(f"{PROG}: {refusal}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
