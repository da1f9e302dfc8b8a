"""What stops a backup or a restore; each message is one line that says what was found and what to do, and nothing
was changed when one is raised."""
from __future__ import annotations


class BackupError(Exception):
    """A backup or restore that must not go on."""


class ArchiveDamaged(BackupError):
    """The archive is truncated, corrupt, or a file in it differs from its checksum."""


class ArchiveTooNew(BackupError):
    """The archive was written by a newer release: a newer archive format, or a schema this release cannot run on."""


class DataPresent(BackupError):
    """The data volume already holds data, and replacing it was not asked for."""


class NotEnoughSpace(BackupError):
    """The disk is full, or has less free space than the data needs."""


class UnreadableDatabase(BackupError):
    """A store's SQLite file cannot be read (not a database, damaged)."""
