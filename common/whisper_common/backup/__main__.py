"""`python -m whisper_common.backup dump|check|stage|commit|abort`: the part of `make backup` and `make restore` that
runs inside a service's image with its data volume (see the package's docstring). A refusal is one line on stderr and
exit status 1; the tar streams are on stdout (dump) and stdin (stage)."""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from pydantic import ValidationError

from whisper_common.backup import load
from whisper_common.backup.dump import dump
from whisper_common.backup.errors import ArchiveDamaged, BackupError
from whisper_common.backup.manifest import ServicePart
from whisper_common.backup.stores import StoreSpec
from whisper_common.db import DatabaseRefused


def _params(values: list[str]) -> dict[str, str]:
    pairs = [value.partition("=") for value in values]
    return {key: value for key, _, value in pairs}


def _inside(name: str) -> str:
    parts = name.split("/")
    if not name or name.startswith("/") or any(part in ("", ".", "..") for part in parts):
        raise ValueError(f"--file {name!r}: give a path relative to DATA_DIR, inside it")
    return name


def run(args: argparse.Namespace) -> int:
    data_dir: Path = args.data_dir
    specs = []
    for text in args.store:
        try:
            specs.append(StoreSpec.parse(text))
        except ModuleNotFoundError as exc:  # a store of a newer checkout than this image: it has none of its files
            print(f"note: {text.partition('=')[0]}: this image has no {exc.name}; left out", file=sys.stderr)
    if args.command == "dump":
        files = [_inside(name) for name in args.file]
        part = dump(data_dir, specs, sys.stdout.buffer, postgres=args.postgres, work_dir=args.work_dir, files=files)
        print(f"{len(part.files)} files, {len(part.missing)} missing", file=sys.stderr)
    elif args.command == "check":
        try:
            part = ServicePart.model_validate_json(sys.stdin.buffer.read())
        except ValidationError as exc:
            raise ArchiveDamaged(f"the service's part of the manifest is not valid ({exc.errors()[0]['msg']})") from None
        for warning in load.check(data_dir, part, specs, replace=args.replace, release=args.release):
            print(f"warning: {warning}", file=sys.stderr)
    elif args.command == "stage":
        part, warnings = load.stage(data_dir, specs, sys.stdin.buffer, replace=args.replace, params=_params(args.param))
        for warning in warnings:
            print(f"warning: {warning}", file=sys.stderr)
        print(f"staged {len(part.files)} files; databases open: {', '.join(s.file for s in part.stores) or 'none'}",
              file=sys.stderr)
    elif args.command == "commit":
        replaced = load.commit(data_dir, replace=args.replace)
        print(f"restored into {data_dir}" + (f" (replaced {', '.join(replaced)})" if replaced else ""), file=sys.stderr)
    else:
        load.abort(data_dir)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m whisper_common.backup", description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=("dump", "check", "stage", "commit", "abort"))
    parser.add_argument("--data-dir", type=Path, default=Path("/data"))
    parser.add_argument("--store", action="append", default=[], metavar="FILE=MODULE:ATTRIBUTE",
                        help="a store's SQLite file in DATA_DIR and its Schema (repeatable)")
    parser.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                        help="a parameter of the stores' migrations (the jobs store's queue)")
    parser.add_argument("--file", action="append", default=[], metavar="PATH",
                        help="dump: a plain file of DATA_DIR no store claims, archived as it is (the API keys file)")
    parser.add_argument("--postgres", action="store_true", help="dump: the stores are in PostgreSQL (files only)")
    parser.add_argument("--replace", action="store_true", help="check/stage/commit: replace data the volume holds")
    parser.add_argument("--release", default="", help="check: the commit that wrote the archive, for the message")
    parser.add_argument("--work-dir", type=Path, help="dump: where the snapshots are made (default: the temp folder)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # The database layer logs its refusal as a line of its own; this command prints it once, below.
    logging.getLogger("whisper_common.db").setLevel(logging.CRITICAL)
    try:
        return run(args)
    except (BackupError, DatabaseRefused, ValueError) as exc:
        print(str(exc), file=sys.stderr)
        return 1
    except BrokenPipeError:
        print("the reader of the stream went away: nothing was completed", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"{exc}: nothing was completed", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
