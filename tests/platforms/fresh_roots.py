"""Fresh Debian roots as a new server has them, made with mmdebstrap (as scripts/build-images.sh makes the image base)
and run as containers on the suite's dockerd.

A root holds only minbase and make, git, ca-certificates, sudo; two users: `admin` (sudo without a password, as a
cloud image's first user) and `guest` (no sudo rights). The repository is copied in as a checkout has it (tracked and
untracked-but-not-ignored files). pip's CA bundle reaches the root as it reaches the image builds: the host's bundle
mounted read-only at /run/secrets/pipca, PIP_CERT naming it in the environment of the command alone.

Cached between runs, in the Docker Engine (it outlives a checkout, so a fresh CI clone finds them): the roots as images
tagged by their recipe, and per suite a named volume for pip's cache and one for apt's downloaded packages. What a run
installs (the Debian packages, .venv) lives only in its container, removed afterwards.
"""

from __future__ import annotations

import codecs
import hashlib
import os
import re
import selectors
import shlex
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tests.containers.docker_cli import docker, inspect
from tests.support import ROOT

MIRROR = os.environ.get("DEBIAN_MIRROR", "http://deb.debian.org/debian")
REPO = "/home/{user}/whisper-platform"
CACHE_VOLUME = "whisper-platform-test-{kind}-{suite}"
# The sid mirror this machine reaches serves an expired Release file now and then; a root made from it keeps trusting
# it (the setting stays in the root's apt configuration).
SUITE_APT_OPTIONS = {"sid": ["Acquire::Check-Valid-Until \"false\""]}


def _recipe(suite: str) -> list[str]:
    hooks = [
        'chroot "$1" useradd --create-home --shell /bin/bash admin',
        'chroot "$1" useradd --create-home --shell /bin/bash guest',
        'echo "admin ALL=(ALL) NOPASSWD:ALL" >"$1"/etc/sudoers.d/admin && chmod 0440 "$1"/etc/sudoers.d/admin',
        # Docker fills a new named volume from the folder it is mounted on: pip's cache volume belongs to admin.
        'mkdir -p "$1"/home/admin/.cache/pip && chroot "$1" chown -R admin:admin /home/admin/.cache',
    ]
    command = ["mmdebstrap", "--variant=minbase", "--include=make,git,ca-certificates,sudo", "--quiet"]
    command += [f"--aptopt={option}" for option in SUITE_APT_OPTIONS.get(suite, [])]
    command += [f"--customize-hook={hook}" for hook in hooks]
    return command


def root_image(suite: str) -> str:
    """The image of a fresh `suite` root, made once per recipe (about 3.5 minutes) and kept by the Docker Engine."""
    recipe = _recipe(suite)
    digest = hashlib.sha256(repr((recipe, MIRROR)).encode()).hexdigest()[:12]
    image = f"whisper-platform-test/fresh-root:{suite}-{digest}"
    if inspect(image) is not None:
        return image
    with tempfile.TemporaryDirectory(prefix="fresh-root-") as workdir:
        tar = Path(workdir) / f"{suite}.tar"
        made = subprocess.run([*recipe, suite, str(tar), MIRROR], capture_output=True, text=True, timeout=1200)
        assert made.returncode == 0, f"mmdebstrap {suite} failed: {made.stderr[-3000:]}"
        imported = subprocess.run(
            ["docker", "import", "--change", "ENV LANG=C.UTF-8", str(tar), image], capture_output=True, text=True,
            timeout=600,
        )  # fmt: skip
        assert imported.returncode == 0, imported.stderr
    return image


# The most Docker's disk holds during one leg of `make run` in a fresh root: its container grows to 9.3 GB (the Debian
# packages and an 8 GB .venv, most of it CUDA torch from PyPI) and pip's downloads lie beside it while it installs.
# Measured here for Debian 12 alone (sampling the free space every 2 s): 13.4 GB at the peak, 351 s; a margin on top.
LEG_DISK_BYTES = 16 * 10**9


def docker_free_bytes() -> int:
    """Free space on the filesystem that holds the Docker Engine's data (its containers' writable layers)."""
    root = docker("info", "--format", "{{.DockerRootDir}}").stdout.strip()
    return shutil.disk_usage(root).free


def reclaim_build_cache() -> str:
    """Drops the Docker Engine's build cache (nothing but time is lost: the next `make images` downloads again)."""
    lines = docker("builder", "prune", "--all", "--force", timeout=600).stdout.strip().splitlines()
    return lines[-1] if lines else "nothing to reclaim"


def host_ca_bundle() -> Path | None:
    """The CA bundle pip trusts on this host (PIP_CERT, else pip's configured cert), as scripts/build-images.sh finds it."""
    configured = os.environ.get("PIP_CERT") or subprocess.run(
        [str(ROOT / ".venv" / "bin" / "pip"), "config", "get", "global.cert"], capture_output=True, text=True
    ).stdout.strip()
    path = Path(configured) if configured else None
    return path if path is not None and path.is_file() else None


@dataclass
class RootContainer:
    """One container of a fresh root; `network` is `host` (the mirror and PyPI reachable) or `none`."""

    suite: str
    image: str
    network: str = "host"
    caches: bool = True
    name: str = field(default_factory=lambda: f"whisper-platform-test-root-{uuid.uuid4().hex[:8]}")

    def start(self) -> RootContainer:
        args = ["run", "-d", "--name", self.name, "--network", self.network, "--label", "whisper-platform-test=root"]
        if self.caches:
            args += ["-v", f"{CACHE_VOLUME.format(kind='pip', suite=self.suite)}:/home/admin/.cache/pip"]
            args += ["-v", f"{CACHE_VOLUME.format(kind='apt', suite=self.suite)}:/var/cache/apt/archives"]
        bundle = host_ca_bundle()
        if bundle is not None:
            args += ["-v", f"{bundle}:/run/secrets/pipca:ro"]
        docker(*args, self.image, "sleep", "infinity")
        return self

    def remove(self) -> None:
        docker("rm", "-f", self.name, check=False, timeout=300)

    @contextmanager
    def running(self) -> Iterator[RootContainer]:
        """Started, and removed on the way out whatever happens inside."""
        self.start()
        try:
            yield self
        finally:
            self.remove()

    def copy_repository(self, user: str) -> str:
        """The checkout's files (tracked, and untracked but not ignored) into the user's home, owned by the user."""
        target = REPO.format(user=user)
        files = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT, capture_output=True,
            check=True,
        ).stdout  # fmt: skip
        present = b"\0".join(name for name in files.split(b"\0") if name and (ROOT / os.fsdecode(name)).exists())
        archive = subprocess.run(
            ["tar", "--null", "-T", "-", "-cf", "-"], cwd=ROOT, input=present, capture_output=True, check=True
        ).stdout
        unpack = f"mkdir -p {target} && tar -xf - -C {target} && chown -R {user}:{user} {target}"
        subprocess.run(["docker", "exec", "-i", self.name, "sh", "-c", unpack], input=archive, check=True)
        return target

    def exec_args(self, user: str, workdir: str, env: dict[str, str] | None = None) -> list[str]:
        args = ["docker", "exec", "-u", user, "-w", workdir]
        environment = dict(env or {})
        if host_ca_bundle() is not None:
            environment.setdefault("PIP_CERT", "/run/secrets/pipca")
        for key, value in environment.items():
            args += ["-e", f"{key}={value}"]
        return [*args, self.name]

    def sh(self, script: str, user: str = "root", workdir: str = "/", timeout: float = 300,
           env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:  # fmt: skip
        return subprocess.run(
            [*self.exec_args(user, workdir, env), "bash", "-c", script], capture_output=True, text=True,
            timeout=timeout,
        )  # fmt: skip

    def installed(self, package: str) -> bool:
        status = self.sh(f"dpkg-query -W -f='${{Status}}' {shlex.quote(package)} 2>/dev/null")
        return "install ok installed" in status.stdout


def error_lines(stderr: str) -> list[str]:
    """What a command printed on stderr, less make's own `make: *** [...] Error 1` line (`make[N]: ***` in a make
    that runs inside another, as the suite does under `make test`)."""
    return [line for line in stderr.splitlines() if line.strip() and not re.match(r"make(\[\d+\])?: \*\*\* ", line)]


def wait_for_line(process: subprocess.Popen[str], marker: str, timeout: float, seen: list[str]) -> bool:
    """Reads the process's output into `seen` until a line contains `marker` (True) or it ends / times out (False).

    Reads the pipe's descriptor as bytes when select says it has some (a text stream in non-blocking mode cannot be
    read: its decoder fails on the None an empty pipe gives), so the stream itself stays usable for communicate()."""
    assert process.stdout is not None
    fd = process.stdout.fileno()
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    deadline = time.monotonic() + timeout
    buffer = ""
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        while (left := deadline - time.monotonic()) > 0:
            if not selector.select(timeout=min(left, 1.0)):
                continue
            chunk = os.read(fd, 65536)
            if not chunk:  # end of output: the process is gone
                seen.append(buffer + decoder.decode(b"", final=True))
                return False
            buffer += decoder.decode(chunk)
            *lines, buffer = buffer.split("\n")
            seen.extend(lines)
            if any(marker in line for line in lines):
                return True
    return False
