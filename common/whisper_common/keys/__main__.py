"""`python -m whisper_common.keys [--file PATH] add|list|revoke`: the keys file's command line.

`add NAME` prints the new key alone on stdout, once (it is not stored; lose it and add another); the services pick the
change up within a second. The file is `--file`, else API_KEYS_FILE.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from whisper_common.keys.file import KeysFileError, add_key, read_keys, revoke_keys
from whisper_common.owners import Quota, Role


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m whisper_common.keys", description=__doc__.split("\n")[0])
    parser.add_argument("--file", type=Path, default=None, help="the keys file (default: $API_KEYS_FILE)")
    commands = parser.add_subparsers(dest="command", required=True)
    add = commands.add_parser("add", help="add a key for NAME and print it once")
    add.add_argument("name", help="the owner: 1-64 of A-Z a-z 0-9 . _ @ -")
    add.add_argument("--role", choices=[role.value for role in Role], default=Role.USER.value,
                     help="admin sees and deletes every owner's data (default: user)")
    add.add_argument("--max-concurrent-requests", type=int, default=None, metavar="N",
                     help="transcriptions and live sessions at once (0: no limit; default: QUOTA__MAX_CONCURRENT_REQUESTS)")
    add.add_argument("--max-active-jobs", type=int, default=None, metavar="N",
                     help="jobs queued or running at once (0: no limit; default: QUOTA__MAX_ACTIVE_JOBS)")
    add.add_argument("--audio-hours-per-day", type=float, default=None, metavar="H",
                     help="hours of audio per UTC day (0: no limit; default: QUOTA__AUDIO_HOURS_PER_DAY)")
    listing = commands.add_parser("list", help="the keys (never the keys themselves)")
    listing.add_argument("--all", action="store_true", help="revoked keys too")
    listing.add_argument("--json", action="store_true", help="as JSON")
    revoke = commands.add_parser("revoke", help="revoke a key by its id, or every key of a name")
    revoke.add_argument("name_or_id")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    path = args.file or (Path(os.environ["API_KEYS_FILE"]) if os.environ.get("API_KEYS_FILE") else None)
    if path is None:
        print("error: no keys file: pass --file PATH or set API_KEYS_FILE", file=sys.stderr)
        return 2
    try:
        if args.command == "add":
            for option in ("max_concurrent_requests", "max_active_jobs", "audio_hours_per_day"):
                if getattr(args, option) is not None and getattr(args, option) < 0:
                    print(f"error: --{option.replace('_', '-')} must be 0 or more", file=sys.stderr)
                    return 2
            quota = Quota(args.max_concurrent_requests, args.max_active_jobs, args.audio_hours_per_day)
            key, entry = add_key(path, args.name, Role(args.role), quota)
            print(key)
            print(f"added {entry.id} for {entry.name} ({entry.role.value}) to {path}; the key is shown only now",
                  file=sys.stderr)
            return 0
        if args.command == "list":
            entries = read_keys(path) if path.exists() else []
            shown = [entry for entry in entries if args.all or entry.active]
            if args.json:
                print(json.dumps([entry.model_dump(mode="json", exclude={"sha256"}) for entry in shown], indent=2))
                return 0
            for entry in shown:
                state = f"revoked {entry.revoked_at}" if entry.revoked_at else "active"
                print(f"{entry.id}  {entry.name:<24} {entry.role.value:<5}  …{entry.hint}  {entry.created_at}  {state}")
            return 0
        revoked = revoke_keys(path, args.name_or_id)
        if not revoked:
            print(f"error: no active key with id or name {args.name_or_id!r} in {path}", file=sys.stderr)
            return 1
        for entry in revoked:
            print(f"revoked {entry.id} ({entry.name})", file=sys.stderr)
        return 0
    except KeysFileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
