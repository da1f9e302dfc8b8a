"""Which stores a service keeps in its DATA_DIR, as the orchestration names them on the command line:
`FILE=MODULE:ATTRIBUTE`, e.g. `jobs.sqlite3=whisper_common.jobs.schema:JOBS_SCHEMA`. The schema is imported from the
image's own code, so the backup knows exactly the versions this release knows; the core names no service."""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import PurePosixPath

from whisper_common.db import Schema

# The files a store's rows point at, relative to DATA_DIR: (table, column).
FILE_COLUMNS: dict[str, tuple[str, str]] = {"jobs": ("jobs", "audio_file")}


@dataclass(frozen=True)
class StoreSpec:
    file: str
    schema: Schema

    @classmethod
    def parse(cls, text: str) -> StoreSpec:
        file, _, target = text.partition("=")
        module_name, _, attribute = target.partition(":")
        if not file or not module_name or not attribute or "/" in file or file.startswith("."):
            raise ValueError(f"--store wants FILE=MODULE:ATTRIBUTE (a file name in DATA_DIR), got {text!r}")
        schema = getattr(importlib.import_module(module_name), attribute)
        if not isinstance(schema, Schema):
            raise ValueError(f"{module_name}:{attribute} is not a whisper_common.db.Schema")
        return cls(str(PurePosixPath(file)), schema)


def schemas_of(specs: list[StoreSpec]) -> dict[str, Schema]:
    return {spec.schema.store: spec.schema for spec in specs}
