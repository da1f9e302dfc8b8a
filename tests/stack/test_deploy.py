"""`make up`'s host-side files (scripts/stack/deploy.py): the Nginx sites installed into an /etc/nginx-like tree
pass `nginx -t`, and the proxy config for a domain is accepted by the proxy itself."""

from __future__ import annotations

import grp
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from scripts.stack.deploy import main as deploy
from scripts.stack.nginx_config import render
from scripts.stack.nginx_process import check_config
from tests.stack.harness import require_nginx
from tests.support import ROOT, require

pytestmark = pytest.mark.stack


@pytest.fixture
def etc_root() -> Iterator[Path]:
    """A folder laid out like a server's /etc and /var: world-traversable (0755, as /etc/nginx is), so that Nginx's
    worker user can reach what it must read. pytest's own temp folders are 0700 root, which no server has."""
    root = Path(tempfile.mkdtemp(prefix="whisper-deploy-test-", dir="/var/tmp"))
    root.chmod(0o755)
    try:
        yield root
    finally:
        shutil.rmtree(root)


def _debian_nginx_conf(nginx_dir: Path, run_dir: Path) -> Path:
    """Debian's shape: `user www-data;` (when root), conf.d/*.conf and sites-enabled/* inside http {}."""
    conf = nginx_dir / "nginx.conf"
    conf.parent.mkdir(parents=True, exist_ok=True)
    conf.write_text(
        render(
            (ROOT / "nginx" / "nginx.conf.template").read_text(),
            {
                "user_directive": "user www-data;" if os.geteuid() == 0 else "",
                "run_dir": str(run_dir),
                "temp_dir": str(run_dir / "tmp"),
                "error_log": str(run_dir / "error.log"),
                "access_log": str(run_dir / "access.log"),
                "mime_types": "/etc/nginx/mime.types",
            },
        )
    )
    (run_dir / "tmp").mkdir(parents=True, exist_ok=True)
    return conf


def _install(etc_root: Path, nginx_dir: Path, *extra: str) -> int:
    return deploy(
        [
            "nginx",
            "--domain", "example.org",
            "--nginx-dir", str(nginx_dir),
            "--htpasswd", str(nginx_dir / "whisper.htpasswd"),
            "--credentials-store", str(etc_root / "whisper-platform" / "credentials"),
            "--acme-webroot", str(etc_root / "acme"),
            "--access-log-dir", str(etc_root / "logs"),
            "--cors-origin", "https://portal.example.org",
            *extra,
        ]
    )  # fmt: skip


def test_nginx_sites_install_enable_and_pass_nginx_t(etc_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    require_nginx()
    nginx_dir = etc_root / "nginx"
    conf = _debian_nginx_conf(nginx_dir, etc_root / "run")
    monkeypatch.setenv("WHISPER_USER", "ops")
    monkeypatch.delenv("WHISPER_PASSWORD", raising=False)
    assert _install(etc_root, nginx_dir, "--nginx-conf", str(conf)) == 0
    for host in ("whisper.example.org", "whisperx.example.org"):
        link = nginx_dir / "sites-enabled" / f"{host}.conf"
        assert link.is_symlink() and link.resolve() == nginx_dir / "sites-available" / f"{host}.conf"
        site = link.read_text()
        # No Let's Encrypt certificate on this machine: a self-signed stand-in until certbot has run.
        assert f"{nginx_dir}/whisper-selfsigned/{host}.pem" in site
    credentials = etc_root / "whisper-platform" / "credentials"
    assert credentials.read_text().startswith("ops:")
    assert credentials.stat().st_mode & 0o777 == 0o600
    htpasswd = nginx_dir / "whisper.htpasswd"
    assert htpasswd.read_text().startswith("ops:$6$")
    # Readable by Nginx's workers' group, by nobody else.
    assert htpasswd.stat().st_mode & 0o777 == 0o640
    if os.geteuid() == 0:
        assert grp.getgrgid(htpasswd.stat().st_gid).gr_name == "www-data"
    assert "syntax is ok" in check_config(conf, etc_root / "run")

    assert deploy(["disable-nginx", "--domain", "example.org", "--nginx-dir", str(nginx_dir)]) == 0
    assert not list((nginx_dir / "sites-enabled").iterdir())


def test_a_configuration_nginx_refuses_puts_the_old_files_back(etc_root: Path) -> None:
    require_nginx()
    nginx_dir = etc_root / "nginx"
    conf = _debian_nginx_conf(nginx_dir, etc_root / "run")
    assert _install(etc_root, nginx_dir, "--nginx-conf", str(conf)) == 0
    site = nginx_dir / "sites-available" / "whisper.example.org.conf"
    before = {path: path.read_bytes() for path in nginx_dir.rglob("*.conf") if path.is_file() and path != conf}
    # A second run whose result Nginx refuses (here: an include Nginx cannot find, added to nginx.conf).
    conf.write_text(conf.read_text().replace("http {", "http {\n    include /nonexistent/x.conf;", 1))
    assert _install(etc_root, nginx_dir, "--nginx-conf", str(conf), "--max-body-size", "900M") == 1
    after = {path: path.read_bytes() for path in before}
    assert after == before, "a refused configuration left new files behind"
    assert b"900M" not in site.read_bytes()


def test_proxy_config_for_a_domain_is_accepted_by_the_proxy(tmp_path: Path) -> None:
    require((ROOT / "autostart" / "config.json").is_file(), "autostart/config.json")
    dest = tmp_path / "autostart.json"
    assert deploy(["proxy-config", "--domain", "example.org", "--dest", str(dest)]) == 0
    config = json.loads(dest.read_text())
    assert set(config["services"]) == {"whisper.example.org", "whisperx.example.org"}
    assert config["services"]["whisper.example.org"]["composeDir"] == str(ROOT / "whisper-faster")
    result = subprocess.run(
        [sys.executable, "-m", "autostart", "--config", str(dest), "--check-config"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("script", ["compose-up.sh", "compose-down.sh", "build-images.sh", "ensure-dockerd.sh"])
def test_compose_scripts_are_shellcheck_clean(script: str) -> None:
    shellcheck = shutil.which("shellcheck")
    require(shellcheck is not None, "shellcheck (apt-get install shellcheck)")
    result = subprocess.run([str(shellcheck), str(ROOT / "scripts" / script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_compose_up_says_what_is_missing(tmp_path: Path) -> None:
    bash = shutil.which("bash") or "/bin/bash"
    env = {k: v for k, v in os.environ.items() if k != "WHISPER_DOMAIN"}
    result = subprocess.run([bash, str(ROOT / "scripts" / "compose-up.sh")], capture_output=True, text=True, env=env)
    assert result.returncode == 1
    assert "set WHISPER_DOMAIN" in result.stderr
    # A PATH with only the coreutils the script needs first: no docker.
    empty = tmp_path / "bin"
    empty.mkdir()
    for tool in ("dirname", "id"):
        found = shutil.which(tool)
        if found:
            (empty / tool).symlink_to(found)
    env = {**os.environ, "PATH": str(empty), "WHISPER_DOMAIN": "example.org"}
    result = subprocess.run([bash, str(ROOT / "scripts" / "compose-up.sh")], capture_output=True, text=True, env=env)
    assert result.returncode == 1
    assert "docker is not installed" in result.stderr


# `make up` / `make down` against a real Docker Engine, with real images: tests/containers/.
