"""`make up`'s host-side files (scripts/stack/deploy.py): the Nginx sites installed into an /etc/nginx-like tree
pass `nginx -t`, and the proxy config for a domain is accepted by the proxy itself."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from scripts.stack.deploy import main as deploy
from scripts.stack.nginx_config import render
from scripts.stack.nginx_process import check_config
from tests.stack.harness import require_nginx
from tests.support import ROOT, require

pytestmark = pytest.mark.stack


def test_nginx_sites_install_enable_and_pass_nginx_t(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    require_nginx()
    nginx_dir = tmp_path / "etc-nginx"
    monkeypatch.setenv("WHISPER_USER", "ops")
    monkeypatch.delenv("WHISPER_PASSWORD", raising=False)
    code = deploy(
        [
            "nginx",
            "--domain", "example.org",
            "--nginx-dir", str(nginx_dir),
            "--htpasswd", str(tmp_path / "whisper.htpasswd"),
            "--credentials-store", str(tmp_path / "credentials"),
            "--acme-webroot", str(tmp_path / "acme"),
            "--access-log-dir", str(tmp_path / "logs"),
            "--cors-origin", "https://portal.example.org",
        ]
    )  # fmt: skip
    assert code == 0
    for host in ("whisper.example.org", "whisperx.example.org"):
        link = nginx_dir / "sites-enabled" / f"{host}.conf"
        assert link.is_symlink() and link.resolve() == nginx_dir / "sites-available" / f"{host}.conf"
        site = link.read_text()
        # No Let's Encrypt certificate on this machine: a self-signed stand-in until certbot has run.
        assert f"{nginx_dir}/whisper-selfsigned/{host}.pem" in site
    assert (tmp_path / "credentials").read_text().startswith("ops:")
    assert (tmp_path / "credentials").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "whisper.htpasswd").read_text().startswith("ops:$6$")

    # Debian's nginx.conf includes conf.d/*.conf and sites-enabled/* inside http {}; the same shape here.
    (nginx_dir / "nginx.conf").write_text(
        render(
            (ROOT / "nginx" / "nginx.conf.template").read_text(),
            {
                "user_directive": "",
                "run_dir": str(tmp_path),
                "error_log": str(tmp_path / "error.log"),
                "access_log": str(tmp_path / "access.log"),
                "mime_types": "/etc/nginx/mime.types",
            },
        )
    )
    for sub in ("tmp/body", "tmp/proxy", "tmp/fastcgi", "tmp/uwsgi", "tmp/scgi", "logs"):
        (tmp_path / sub).mkdir(parents=True, exist_ok=True)
    assert "syntax is ok" in check_config(nginx_dir / "nginx.conf", tmp_path)

    assert deploy(["disable-nginx", "--domain", "example.org", "--nginx-dir", str(nginx_dir)]) == 0
    assert not list((nginx_dir / "sites-enabled").iterdir())


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
