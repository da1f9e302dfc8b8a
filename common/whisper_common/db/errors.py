"""What a store may meet from its database, named once for both backends; each message is one line."""
from __future__ import annotations


class DuplicateKey(Exception):
    """An insert met a unique constraint (e.g. a job's Idempotency-Key)."""


class StorageFull(Exception):
    """The database could not write: no space left."""


class DatabaseRefused(Exception):
    """The service must not start on this database; the message says why and what to do, in one line, and nothing
    in the database was changed."""


class SchemaTooNew(DatabaseRefused):
    """The database's schema was migrated by a newer release, with a change this release cannot run on."""


class ForeignDatabase(DatabaseRefused):
    """An SQLite file that holds another application's tables, none of this store's."""


class CorruptDatabase(DatabaseRefused):
    """A file SQLite cannot read as a database (not one, or damaged)."""
