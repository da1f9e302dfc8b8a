"""Named keys without a server: the command line (`python -m whisper_common.keys`), the keys file, the KeyRing a
service checks keys against (reloaded within a second, the last good set kept when the file does not parse), and who
the caller is (`auth.OwnerResolver`: key, trusted edge user, or nobody)."""
from __future__ import annotations

import json
import logging
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from whisper_common.auth import OwnerResolver
from whisper_common.errors import Unauthorized
from whisper_common.keys import KeyRing, hash_key, legacy_owner_name
from whisper_common.keys.file import add_key, read_keys, revoke_keys
from whisper_common.owners import ANONYMOUS, Role


def keys_cli(path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "whisper_common.keys", "--file", str(path), *args],
                          capture_output=True, text=True, timeout=60)


def test_the_command_line_adds_lists_and_revokes_and_shows_a_key_only_once(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "api-keys.json"
    added = keys_cli(path, "add", "team-a", "--max-concurrent-requests", "2", "--audio-hours-per-day", "1.5")
    assert added.returncode == 0, added.stderr
    key = added.stdout.strip()
    assert key.startswith("wsk_") and len(key) == 47 and "shown only now" in added.stderr
    assert keys_cli(path, "add", "boss", "--role", "admin").returncode == 0
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    text = path.read_text()
    assert key not in text and hash_key(key) in text  # stored hashed, never in clear
    listed = keys_cli(path, "list")
    assert listed.returncode == 0 and key not in listed.stdout and hash_key(key) not in listed.stdout
    assert "team-a" in listed.stdout and "boss" in listed.stdout and "admin" in listed.stdout
    [entry] = [e for e in json.loads(keys_cli(path, "list", "--json").stdout) if e["name"] == "team-a"]
    assert "sha256" not in entry and entry["quota"]["max_concurrent_requests"] == 2
    revoked = keys_cli(path, "revoke", entry["id"])
    assert revoked.returncode == 0 and entry["id"] in revoked.stderr
    assert "team-a" not in keys_cli(path, "list").stdout and "revoked" in keys_cli(path, "list", "--all").stdout
    missing = keys_cli(path, "revoke", "nobody")
    assert missing.returncode == 1 and "no active key" in missing.stderr


@pytest.mark.parametrize("args", [["add", "team a"], ["add", "-x"], ["add", "a" * 65], ["add", "x", "--role", "root"],
                                  ["add", "x", "--max-active-jobs", "-1"]])
def test_the_command_line_refuses_bad_names_and_values(tmp_path: Path, args: list[str]) -> None:
    result = keys_cli(tmp_path / "api-keys.json", *args)
    assert result.returncode in (1, 2) and result.stdout == "" and "error" in result.stderr
    assert not (tmp_path / "api-keys.json").exists() or read_keys(tmp_path / "api-keys.json") == []


def test_the_command_line_needs_a_file(tmp_path: Path) -> None:
    env = {key: value for key, value in os.environ.items() if key != "API_KEYS_FILE"}
    result = subprocess.run([sys.executable, "-m", "whisper_common.keys", "list"], capture_output=True, text=True,
                            env=env, timeout=60)
    assert result.returncode == 2 and "API_KEYS_FILE" in result.stderr


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_ring_picks_up_added_and_revoked_keys_within_a_second(tmp_path: Path) -> None:
    path, clock = tmp_path / "api-keys.json", Clock()
    key_a, _ = add_key(path, "team-a")
    ring = KeyRing(path=path, clock=clock)
    assert ring.lookup(key_a).name == "team-a"  # type: ignore[union-attr]
    key_b, _ = add_key(path, "team-b", Role.ADMIN)
    assert ring.lookup(key_b) is None  # checked again once a second
    clock.now += 1.0
    owner_b = ring.lookup(key_b)
    assert owner_b is not None and owner_b.name == "team-b" and owner_b.is_admin
    revoke_keys(path, "team-a")
    clock.now += 1.0
    assert ring.lookup(key_a) is None and ring.lookup(key_b) is not None


def test_a_keys_file_that_does_not_parse_keeps_the_last_good_set_and_says_so_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path, clock = tmp_path / "api-keys.json", Clock()
    key, _ = add_key(path, "team-a")
    ring = KeyRing(path=path, clock=clock)
    good = path.read_text()
    caplog.set_level(logging.INFO, logger="whisper_common.keys")
    for broken in ('{"version": 1, "keys": [', '{"version": 1, "keys": [{"name": "x"}]}', "\x00\xff", "[]"):
        path.write_text(broken)
        for _ in range(3):
            clock.now += 1.0
            assert ring.lookup(key).name == "team-a"  # type: ignore[union-attr]
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 4, [r.getMessage() for r in errors]  # one line per distinct problem, not per request
    assert all("\n" not in r.getMessage() and "keeping the last good set" in r.getMessage() for r in errors)
    assert "keys.0.id: Field required" in errors[1].getMessage()
    path.write_text(good)
    clock.now += 1.0
    assert ring.lookup(key) is not None and ring.last_error is None


def test_a_keys_file_broken_at_start_accepts_no_key_of_it(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "api-keys.json"
    path.write_text("not json")
    ring = KeyRing(["legacy-key-1"], path)
    assert ring.configured and ring.lookup("legacy-key-1") is not None
    assert ring.lookup("not json") is None
    assert any("no key of the file is accepted" in r.getMessage() for r in caplog.records)


def test_api_keys_are_each_their_own_owner_named_by_a_hash(tmp_path: Path) -> None:
    ring = KeyRing(["first-secret-key", "second-secret-key"])
    first, second = ring.lookup("first-secret-key"), ring.lookup("second-secret-key")
    assert first is not None and second is not None and first.name != second.name
    assert first.name == legacy_owner_name("first-secret-key") == f"key-{hash_key('first-secret-key')[:12]}"
    assert "secret" not in first.name and first.role is Role.USER


@pytest.mark.parametrize("presented", ["", " ", "x" * 100_000, "wsk_\u00e9\u4e2d", "\udcff", "first-secret-key "])
def test_malformed_keys_are_refused_not_raised(presented: str) -> None:
    assert KeyRing(["first-secret-key"]).lookup(presented) is None


def scope(headers: dict[str, str], client: str = "127.0.0.1", kind: str = "http", subprotocols: tuple = ()) -> dict:
    return {"type": kind, "path": "/v1/jobs", "client": (client, 5000), "subprotocols": list(subprotocols),
            "headers": [(k.lower().encode(), v.encode("latin-1")) for k, v in headers.items()]}


def test_the_caller_is_a_key_a_trusted_edge_user_or_nobody(tmp_path: Path) -> None:
    path = tmp_path / "api-keys.json"
    key, _ = add_key(path, "team-a")
    resolver = OwnerResolver.build(KeyRing(path=path), ["127.0.0.1/32"], "X-Whisper-User", ["alice"])
    assert resolver.resolve(scope({"Authorization": f"Bearer {key}"})).name == "team-a"
    assert resolver.resolve(scope({}, kind="websocket", subprotocols=("realtime", f"openai-insecure-api-key.{key}"))).name == "team-a"
    edge = resolver.resolve(scope({"X-Whisper-User": "alice"}))
    assert edge.name == "alice" and edge.is_admin and edge.source == "edge"
    assert not resolver.resolve(scope({"X-Whisper-User": "bob"})).is_admin
    refused = [
        scope({"X-Whisper-User": "alice"}, client="10.1.2.3"),  # not from the proxy: the header means nothing
        scope({"Authorization": "Bearer wrong", "X-Whisper-User": "alice"}),  # a wrong key is a 401 whatever else
        scope({"X-Whisper-User": "al ice"}), scope({"X-Whisper-User": "\u00e9ve"}),  # no owner name
        scope({"X-Whisper-Edge-Auth": "api-key"}),  # the edge left the check to a key there is none of
        scope({}),
    ]
    for request in refused:
        with pytest.raises(Unauthorized):
            resolver.resolve(request)


def test_without_authentication_the_caller_is_anonymous_unless_the_edge_asked_for_a_key() -> None:
    resolver = OwnerResolver.build(KeyRing())
    assert resolver.resolve(scope({})) is ANONYMOUS
    assert resolver.resolve(scope({"Authorization": "Bearer anything", "X-Whisper-User": "boss"})) is ANONYMOUS
    with pytest.raises(Unauthorized):
        resolver.resolve(scope({"Authorization": "Bearer anything", "X-Whisper-Edge-Auth": "api-key"}))
