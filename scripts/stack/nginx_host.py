"""The host's Nginx as `make up` finds it: who its workers run as, and whether they can read what the sites need.

Debian's and Ubuntu's Nginx run their workers as `www-data` (`user www-data;` in /etc/nginx/nginx.conf), Fedora's and
RHEL's as `nginx`; a build without the directive uses its compiled-in user (`nginx -V`: `--user=`), else `nobody`.
The master process (root) reads the configuration and the certificates; the workers read the htpasswd file on every
authenticated request and serve the ACME challenge folder. A file the workers cannot read is an HTML 500 for every
request (`open() "/etc/nginx/whisper.htpasswd" failed (13: Permission denied)`), so every file `make up` writes for
Nginx is owned by root, group the worker's group, mode 0640 (folders 0750), and each is checked as the worker user.
"""

from __future__ import annotations

import grp
import os
import pwd
import re
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

USER_DIRECTIVE = re.compile(r"^\s*user\s+([^\s;]+)(?:\s+([^\s;]+))?\s*;", re.MULTILINE)
FILE_MODE = 0o640
DIR_MODE = 0o750


class NginxHostError(RuntimeError):
    """Something on the host stops Nginx from serving the sites; the message names the file and the fix."""


@dataclass(frozen=True)
class Worker:
    """The account Nginx's worker processes run as, and where that was decided."""

    user: str
    group: str
    source: str  # "user directive in /etc/nginx/nginx.conf", "compiled-in default", ...

    @property
    def uid(self) -> int:
        return pwd.getpwnam(self.user).pw_uid

    @property
    def gid(self) -> int:
        return grp.getgrnam(self.group).gr_gid


def worker_of(nginx_conf: Path, nginx_binary: str | None) -> Worker:
    """The worker user of the Nginx that runs `nginx_conf`; raises NginxHostError when that account does not exist."""
    text = _without_comments(nginx_conf.read_text())
    match = USER_DIRECTIVE.search(text)
    if match:
        user, group = match.group(1), match.group(2) or match.group(1)
        source = f"the `user` directive in {nginx_conf}"
    else:
        user, group = _compiled_user(nginx_binary)
        source = f"Nginx's compiled-in default ({nginx_conf} has no `user` directive)"
    try:
        pwd.getpwnam(user)
    except KeyError:
        raise NginxHostError(
            f"Nginx's worker user {user!r} ({source}) does not exist on this host: create it "
            f"(useradd --system --no-create-home --shell /usr/sbin/nologin {user}) or correct the directive"
        ) from None
    try:
        grp.getgrnam(group)
    except KeyError:
        raise NginxHostError(
            f"Nginx's worker group {group!r} ({source}) does not exist on this host: create it (groupadd --system "
            f"{group}) or name an existing group in the directive (user {user} <group>;)"
        ) from None
    return Worker(user, group, source)


def secure(path: Path, worker: Worker) -> None:
    """Root (or whoever runs make up) owns it, the worker's group may read it, nobody else may."""
    if os.geteuid() == 0:
        os.chown(path, 0, worker.gid)
    path.chmod(DIR_MODE if path.is_dir() else FILE_MODE)


def check_readable(paths: Iterable[Path], worker: Worker) -> None:
    """Raises NginxHostError naming the first path the worker user cannot read, and the fix."""
    for path in paths:
        if not worker_can_read(path, worker):
            raise NginxHostError(f"Nginx's worker user {worker.user!r} cannot read {path}: {_fix(path, worker)}")


def check_owned_by_root(paths: Iterable[Path]) -> None:
    """Certificates and keys must be root's and writable by nobody else (whoever may write them may replace them)."""
    if os.geteuid() != 0:
        return
    for path in paths:
        if not path.exists():
            continue
        info = path.stat()
        if info.st_uid != 0 or info.st_mode & 0o022:
            kind = "folder" if path.is_dir() else "file"
            raise NginxHostError(
                f"{path} ({kind} of the TLS certificates) is owned by uid {info.st_uid} with mode "
                f"{info.st_mode & 0o777:04o}: it must be root's and writable by root alone: "
                f"chown -R root {path} && chmod -R go-w {path}"
            )


def worker_can_read(path: Path, worker: Worker) -> bool:
    """`test -r` (and `-x` for a folder) run as the worker user with its groups: exactly what a worker may do."""
    if os.geteuid() != 0:
        return os.access(path, os.R_OK)  # not root: Nginx's workers run as this same user
    flags = ["-r", str(path)] + (["-a", "-x", str(path)] if path.is_dir() else [])
    result = subprocess.run(
        ["test", *flags],
        user=worker.uid,
        group=worker.gid,
        extra_groups=os.getgrouplist(worker.user, worker.gid),
        check=False,
    )
    return result.returncode == 0


def _fix(path: Path, worker: Worker) -> str:
    blocked = next((parent for parent in reversed(path.parents) if not _traversable(parent, worker)), None)
    if blocked is not None:
        return f"the folder {blocked} cannot be entered by it: chmod o+x {blocked} (or move the file)"
    return f"chgrp {worker.group} {path} && chmod 0640 {path}"


def _traversable(folder: Path, worker: Worker) -> bool:
    if os.geteuid() != 0:
        return os.access(folder, os.X_OK)
    result = subprocess.run(
        ["test", "-x", str(folder)], user=worker.uid, group=worker.gid,
        extra_groups=os.getgrouplist(worker.user, worker.gid), check=False,
    )  # fmt: skip
    return result.returncode == 0


def _compiled_user(nginx_binary: str | None) -> tuple[str, str]:
    if nginx_binary:
        result = subprocess.run([nginx_binary, "-V"], capture_output=True, text=True, check=False)
        options = result.stderr + result.stdout
        user = re.search(r"--user=(\S+)", options)
        group = re.search(r"--group=(\S+)", options)
        if user:
            return user.group(1), group.group(1) if group else user.group(1)
    return "nobody", "nogroup" if _group_exists("nogroup") else "nobody"


def _group_exists(name: str) -> bool:
    try:
        grp.getgrnam(name)
    except KeyError:
        return False
    return True


def _without_comments(text: str) -> str:
    return "\n".join(line.split("#", 1)[0] for line in text.splitlines())
