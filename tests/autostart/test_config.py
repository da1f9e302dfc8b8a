"""Config validation and the CLI: a bad file stops the proxy with a message that names the key."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from autostart.config import AutostartConfig, ConfigError, ServiceConfig, load_config, parse_config
from tests.support import ROOT

pytestmark = pytest.mark.timeout(60)


def service(**extra):
    return {"name": "whisper", "proxyPort": 8001, "containers": ["faster-whisper"], **extra}


def test_defaults_match_the_documented_ones(tmp_path):
    config = parse_config({"services": {"Whisper.Example.COM": service()}}, tmp_path)
    [(host, whisper)] = config.services.items()
    assert host == "whisper.example.com"
    assert whisper.provider == "docker" and whisper.upstream_host == "127.0.0.1"
    assert whisper.health_path == "/health" and whisper.blocking is True
    assert whisper.start_timeout == 60 and whisper.idle_timeout == 900 and whisper.max_waiting == 1000
    assert whisper.request_timeout == 600 and whisper.ready_poll_interval <= 0.25


def test_relative_paths_resolve_against_the_config_file(tmp_path):
    path = tmp_path / "proxy" / "config.json"
    path.parent.mkdir()
    path.write_text(json.dumps({"services": {"a.test": service(composeDir="../whisper-faster")}}))
    assert load_config(path).services["a.test"].compose_dir == tmp_path / "whisper-faster"


def test_the_shipped_config_is_valid():
    config = load_config(ROOT / "autostart" / "config.json")
    assert {s.proxy_port for s in config.services.values()} == {8001, 8002}


def test_a_command_string_is_split_like_a_shell_would(tmp_path):
    config = parse_config({"services": {"a.test": {"name": "a", "provider": "command", "proxyPort": 9,
                                                   "startCommand": "uvicorn app:app --port '9'"}}}, tmp_path)
    assert config.services["a.test"].start_command == ["uvicorn", "app:app", "--port", "9"]


@pytest.mark.parametrize(
    ("services", "message"),
    [
        ({"a.test": service(proxyPort="eighty")}, "services['a.test'].proxyPort: Input should be a valid integer"),
        ({"a.test": service(startTimeOut=5)}, "services['a.test'].startTimeOut: unknown key"),
        ({"a.test": service(), "b.test": service(name="other")}, "duplicate proxyPort 8001"),
        ({"a.test": service(), "A.TEST": service(name="b", proxyPort=2)}, "listed twice"),
        ({"a.test": service(containers=[])}, "needs at least one entry in 'containers'"),
        ({"a.test": {"name": "a", "provider": "command", "proxyPort": 1}}, "needs 'startCommand'"),
        ({"a.test": service(provider="kubernetes")}, "services['a.test'].provider"),
        ({"a.test": service(healthPath="health")}, "services['a.test'].healthPath"),
        ({"a.test": service(idleTimeout=-1)}, "services['a.test'].idleTimeout"),
        ({"a.test": service(ignoreUserAgents=["(unclosed"])}, "invalid regular expression"),
        ({"http://a.test": service()}, "is not a host name"),
        ({}, "at least one service"),
    ],
)
def test_invalid_configs_name_the_problem(tmp_path, services, message):
    with pytest.raises(ConfigError) as caught:
        parse_config({"services": services}, tmp_path)
    assert message in str(caught.value)


def test_every_field_is_documented():
    for model in (AutostartConfig, ServiceConfig):
        for name, field in model.model_fields.items():
            assert field.description, f"{model.__name__}.{name} has no description"
    schema = ServiceConfig.model_json_schema(by_alias=True)
    assert {"proxyPort", "composeDir", "idleTimeout", "ignoreUserAgents"} <= set(schema["properties"])


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "autostart", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=30)


def test_cli_refuses_an_invalid_config_naming_the_key(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"services": {"a.test": service(idleTimeout="soon")}}))
    result = run_cli("--config", str(path))
    assert result.returncode == 2
    assert "services['a.test'].idleTimeout" in result.stderr and "Traceback" not in result.stderr


def test_cli_refuses_a_file_that_is_not_json(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text("{services: }")
    result = run_cli("--config", str(path))
    assert result.returncode == 2 and "not valid JSON" in result.stderr


def test_cli_checks_the_shipped_config():
    result = run_cli("--config", "autostart/config.json", "--check-config")
    assert result.returncode == 0, result.stderr
    assert "OK (2 services)" in result.stdout


def test_cli_reports_a_port_in_use(tmp_path):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        path = tmp_path / "ok.json"
        path.write_text(json.dumps({"services": {"a.test": service()}}))
        result = run_cli("--config", str(path), "--listen", f"127.0.0.1:{port}")
    assert result.returncode == 1 and "cannot listen" in result.stderr


def test_console_script_is_installed():
    script = Path(sys.executable).parent / "autostart"
    assert script.exists()
    assert subprocess.run([str(script), "--help"], capture_output=True, timeout=30).returncode == 0


def test_config_reference_lists_every_key_with_its_default():
    result = run_cli("--config-reference")
    assert result.returncode == 0
    for model in (AutostartConfig, ServiceConfig):
        for name, field in model.model_fields.items():
            assert f"| `{field.alias or name}` |" in result.stdout
    assert "| `idleTimeout` | number | `900` |" in result.stdout
    assert "| `provider` | `docker` \\| `command` | `\"docker\"` |" in result.stdout
