"""Backup and restore of a service's DATA_DIR, run inside the service's own image (the release's own database code):
a consistent snapshot of each SQLite store (the online backup API) with exactly the files its rows reference, written
as a tar stream with a manifest (schema versions, SHA-256 per file); and the way back, staged beside the data,
verified file by file and opened with the stores' schemas before it replaces anything.

    python -m whisper_common.backup dump  --data-dir /data --store jobs.sqlite3=whisper_common.jobs.schema:JOBS_SCHEMA
    python -m whisper_common.backup check --data-dir /data --store ... < service.json     # refusals, before writing
    python -m whisper_common.backup stage --data-dir /data --store ... < part.tar          # into /data/.restore-staging
    python -m whisper_common.backup commit --data-dir /data                                # staged data into place

`make backup` and `make restore` (scripts/stack/backup.py, restore.py) run these in `docker run --volumes-from` of each
service's container and put the parts into one archive. Modules: `manifest` (what an archive records, the checks made
on it), `stores` (which schema a database file has), `snapshot` (SQLite's online backup, versions, referenced files),
`dump`, `load` (check, stage, commit), `errors`. See docs/backup.md.
"""
from whisper_common.backup.errors import (
    ArchiveDamaged,
    ArchiveTooNew,
    BackupError,
    DataPresent,
    NotEnoughSpace,
    UnreadableDatabase,
)

__all__ = ["ArchiveDamaged", "ArchiveTooNew", "BackupError", "DataPresent", "NotEnoughSpace", "UnreadableDatabase"]
