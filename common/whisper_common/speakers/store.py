"""The voiceprints: each speaker (an owner's name for a voice) and its enrolment samples, each sample's embedding
(float32, 256 numbers) with the model that made it, and its audio only when the operator keeps audio. Queries on the
database layer (whisper_common.db): an SQLite file in DATA_DIR (`speakers.sqlite3`), or PostgreSQL
(SPEAKERS__DATABASE_URL, else JOBS_DATABASE_URL), where both services may share one library.

    store = open_speaker_store(settings)                   # migrated (store "speakers"), ready
    speaker = store.create("team-a", "Maria", [sample])    # SpeakerRow
    store.get(owner, speaker.id)                           # None unless `owner` may see it (its own; an admin: any)
    store.voiceprints("team-a", ["Maria"])                 # the owner's OWN voiceprints, for matching

Reads filter by the caller in the query (`owners.owner_filter`): another owner's speaker is answered like one that
does not exist. Matching uses only the caller's own voiceprints, an admin's too (an admin's `speakers=library` is its
own library, not everyone's). Deleting a speaker or erasing an owner removes the rows and, in SQLite, their bytes
(`forget_deleted`).
"""
from __future__ import annotations

import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from whisper_common.db import Database, DuplicateKey, Migration, MigrationContext, Params, Schema, open_database
from whisper_common.owners import Owner, owner_filter
from whisper_common.settings import ServiceSettings
from whisper_common.speakers.errors import LibraryFull, SpeakerNameTaken
from whisper_common.speakers.settings import SpeakerLibrarySettings

SQLITE_FILE = "speakers.sqlite3"


def _tables(context: MigrationContext) -> None:
    binary = "BYTEA" if context.db.backend == "postgresql" else "BLOB"
    context.execute(
        "CREATE TABLE IF NOT EXISTS speakers (id TEXT PRIMARY KEY, owner TEXT NOT NULL, name TEXT NOT NULL, "
        "created_at BIGINT NOT NULL, updated_at BIGINT NOT NULL)"
    )
    context.execute("CREATE UNIQUE INDEX IF NOT EXISTS speakers_owner_name ON speakers (owner, name)")
    context.execute(
        "CREATE TABLE IF NOT EXISTS speaker_samples (id TEXT PRIMARY KEY, "
        "speaker_id TEXT NOT NULL REFERENCES speakers(id), created_at DOUBLE PRECISION NOT NULL, "
        f"seconds DOUBLE PRECISION NOT NULL, speech_seconds DOUBLE PRECISION NOT NULL, model TEXT NOT NULL, "
        f"embedding {binary} NOT NULL, audio {binary})"
    )
    context.execute("CREATE INDEX IF NOT EXISTS speaker_samples_speaker ON speaker_samples (speaker_id, created_at)")


SPEAKERS_SCHEMA = Schema(
    store="speakers",
    tables=frozenset({"speakers", "speaker_samples"}),
    migrations=(Migration(1, "speakers and their enrolment samples", (_tables,)),),
)


@dataclass(frozen=True)
class NewSample:
    seconds: float
    speech_seconds: float
    model: str
    embedding: np.ndarray
    audio: bytes | None = None


@dataclass(frozen=True)
class SampleRow:
    id: str
    created_at: float
    seconds: float
    speech_seconds: float
    model: str
    audio_kept: bool


@dataclass(frozen=True)
class SpeakerRow:
    id: str
    owner: str
    name: str
    created_at: int
    updated_at: int
    samples: list[SampleRow] = field(default_factory=list)


@dataclass(frozen=True)
class StoredVoiceprint:
    """A speaker's embeddings by model, for matching."""

    id: str
    name: str
    embeddings: dict[str, list[np.ndarray]]


def new_speaker_id() -> str:
    return f"spk_{secrets.token_hex(12)}"


def _sample_id() -> str:
    return f"smp_{secrets.token_hex(12)}"


def _vector(raw: bytes | memoryview) -> np.ndarray:
    return np.frombuffer(bytes(raw), dtype="<f4").astype(np.float32)


class SpeakerStore:
    def __init__(self, db: Database, limits: SpeakerLibrarySettings | None = None) -> None:
        self.db = db
        self.limits = limits or SpeakerLibrarySettings()

    def create(self, owner: str, name: str, samples: Sequence[NewSample]) -> SpeakerRow:
        """A new speaker of `owner` with its first samples; SpeakerNameTaken when the owner has one of that name,
        LibraryFull past SPEAKERS__MAX_VOICEPRINTS."""
        now = int(time.time())
        speaker_id = new_speaker_id()
        with self.db.transaction() as tx:
            taken = tx.execute("SELECT id FROM speakers WHERE owner = $1 AND name = $2", (owner, name))
            if taken:
                raise SpeakerNameTaken(name, taken[0]["id"])
            count = tx.execute("SELECT COUNT(*) AS n FROM speakers WHERE owner = $1", (owner,))[0]["n"]
            if int(count) >= self.limits.max_voiceprints:
                raise LibraryFull(f"you have {count} speakers, the most this server keeps per owner "
                                  f"(SPEAKERS__MAX_VOICEPRINTS={self.limits.max_voiceprints}); delete one first", "name")
            try:
                tx.execute("INSERT INTO speakers (id, owner, name, created_at, updated_at) VALUES ($1, $2, $3, $4, $4)",
                           (speaker_id, owner, name, now))
            except DuplicateKey:  # the same name created at the same moment by another request
                raise SpeakerNameTaken(name, "being created") from None
            self._insert_samples(tx, speaker_id, samples)
        created = self._get(speaker_id, Owner(owner))
        assert created is not None
        return created

    def add_samples(self, owner: Owner, speaker_id: str, samples: Sequence[NewSample]) -> SpeakerRow | None:
        """More samples for a speaker `owner` may see; None when it may not (or there is none)."""
        p = Params()
        with self.db.transaction() as tx:
            rows = tx.execute(f"SELECT id FROM speakers WHERE id = {p(speaker_id)} AND {owner_filter(p, owner)}"
                              f"{self.db.for_update}", p.values)
            if not rows:
                return None
            count = tx.execute("SELECT COUNT(*) AS n FROM speaker_samples WHERE speaker_id = $1", (speaker_id,))[0]["n"]
            if int(count) + len(samples) > self.limits.max_samples:
                raise LibraryFull(f"this speaker has {count} clips; at most {self.limits.max_samples} are kept "
                                  "(SPEAKERS__MAX_SAMPLES)", "file")
            self._insert_samples(tx, speaker_id, samples)
            tx.execute("UPDATE speakers SET updated_at = $1 WHERE id = $2", (int(time.time()), speaker_id))
        return self._get(speaker_id, owner)

    def _insert_samples(self, tx, speaker_id: str, samples: Sequence[NewSample]) -> None:  # noqa: ANN001 - a Tx
        for sample in samples:
            tx.execute(
                "INSERT INTO speaker_samples (id, speaker_id, created_at, seconds, speech_seconds, model, embedding, "
                "audio) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                (_sample_id(), speaker_id, time.time(), round(sample.seconds, 3), round(sample.speech_seconds, 3),
                 sample.model, np.asarray(sample.embedding, dtype="<f4").tobytes(), sample.audio),
            )

    def get(self, owner: Owner, speaker_id: str) -> SpeakerRow | None:
        return self._get(speaker_id, owner)

    def _get(self, speaker_id: str, owner: Owner) -> SpeakerRow | None:
        p = Params()
        with self.db.transaction() as tx:
            rows = tx.execute(
                f"SELECT id, owner, name, created_at, updated_at FROM speakers WHERE id = {p(speaker_id)} "
                f"AND {owner_filter(p, owner)}", p.values,
            )
            if not rows:
                return None
            samples = self._samples(tx, [speaker_id])
        return _speaker(rows[0], samples.get(speaker_id, []))

    def list(self, owner: Owner, limit: int, after: str | None = None) -> list[SpeakerRow]:
        """The speakers `owner` may see (an admin: everyone's), by name then id, `limit` from after the id `after`."""
        p = Params()
        where = [owner_filter(p, owner)]
        with self.db.transaction() as tx:
            if after is not None:
                cursor = tx.execute("SELECT name, id FROM speakers WHERE id = $1", (after,))
                if cursor:
                    name, cursor_id = cursor[0]["name"], cursor[0]["id"]
                    where.append(f"(name > {p(name)} OR (name = {p(name)} AND id > {p(cursor_id)}))")
            rows = tx.execute(
                f"SELECT id, owner, name, created_at, updated_at FROM speakers WHERE {' AND '.join(where)} "
                f"ORDER BY name, id LIMIT {p(limit)}", p.values,
            )
            samples = self._samples(tx, [row["id"] for row in rows])
        return [_speaker(row, samples.get(row["id"], [])) for row in rows]

    def _samples(self, tx, speaker_ids: list[str]) -> dict[str, list[SampleRow]]:  # noqa: ANN001 - a Tx
        if not speaker_ids:
            return {}
        p = Params()
        marks = ", ".join(p(speaker_id) for speaker_id in speaker_ids)
        rows = tx.execute(
            "SELECT id, speaker_id, created_at, seconds, speech_seconds, model, audio IS NOT NULL AS audio_kept "
            f"FROM speaker_samples WHERE speaker_id IN ({marks}) ORDER BY created_at, id", p.values,
        )
        found: dict[str, list[SampleRow]] = {}
        for row in rows:
            found.setdefault(row["speaker_id"], []).append(SampleRow(
                row["id"], float(row["created_at"]), float(row["seconds"]), float(row["speech_seconds"]),
                row["model"], bool(row["audio_kept"]),
            ))
        return found

    def delete(self, owner: Owner, speaker_id: str) -> bool:
        """Remove a speaker `owner` may see, with its samples (embeddings and audio); False when there is none."""
        p = Params()
        with self.db.transaction() as tx:
            rows = tx.execute(f"SELECT id FROM speakers WHERE id = {p(speaker_id)} AND {owner_filter(p, owner)}",
                              p.values)
            if not rows:
                return False
            tx.execute("DELETE FROM speaker_samples WHERE speaker_id = $1", (speaker_id,))
            tx.execute("DELETE FROM speakers WHERE id = $1", (speaker_id,))
        self.db.forget_deleted()
        return True

    def voiceprints(self, owner: str, names: Sequence[str] | None = None) -> list[StoredVoiceprint]:
        """`owner`'s own speakers (all, or those whose name or id is in `names`) with their embeddings by model."""
        p = Params()
        where = [f"s.owner = {p(owner)}"]
        if names is not None:
            if not names:
                return []
            marks = ", ".join(p(name) for name in names)
            where.append(f"(s.name IN ({marks}) OR s.id IN ({marks}))")
        with self.db.transaction() as tx:
            rows = tx.execute(
                "SELECT s.id, s.name, m.model, m.embedding FROM speakers s JOIN speaker_samples m ON m.speaker_id = s.id "
                f"WHERE {' AND '.join(where)} ORDER BY s.name, m.created_at", p.values,
            )
        found: dict[str, StoredVoiceprint] = {}
        for row in rows:
            voiceprint = found.setdefault(row["id"], StoredVoiceprint(row["id"], row["name"], {}))
            voiceprint.embeddings.setdefault(row["model"], []).append(_vector(row["embedding"]))
        return list(found.values())

    def kept_audio(self, owner: Owner, speaker_id: str) -> list[tuple[str, bytes]]:
        """The kept audio of a speaker's samples (sample id, PCM16), for re-embedding."""
        p = Params()
        with self.db.transaction() as tx:
            return [(row["id"], bytes(row["audio"])) for row in tx.execute(
                "SELECT m.id, m.audio FROM speaker_samples m JOIN speakers s ON s.id = m.speaker_id "
                f"WHERE s.id = {p(speaker_id)} AND {owner_filter(p, owner, 's.owner')} AND m.audio IS NOT NULL",
                p.values,
            )]

    def models(self) -> dict[str, int]:
        """How many samples each embedding model made (across owners): to detect a model change at start."""
        with self.db.transaction() as tx:
            rows = tx.execute("SELECT model, COUNT(*) AS n FROM speaker_samples GROUP BY model")
        return {row["model"]: int(row["n"]) for row in rows}

    def erase_owner(self, owner: str) -> int:
        """Remove every speaker of `owner` with its samples; returns how many speakers."""
        mine = "SELECT id FROM speakers WHERE owner = $1"
        with self.db.transaction() as tx:
            tx.execute(f"DELETE FROM speaker_samples WHERE speaker_id IN ({mine})", (owner,))
            tx.execute("DELETE FROM speakers WHERE owner = $1", (owner,))
            removed = tx.rowcount
        self.db.forget_deleted()
        return removed

    def close(self) -> None:
        self.db.close()


def _speaker(row: dict, samples: list[SampleRow]) -> SpeakerRow:
    return SpeakerRow(row["id"], row["owner"], row["name"], int(row["created_at"]), int(row["updated_at"]), samples)


def speaker_database(settings: ServiceSettings, library: SpeakerLibrarySettings) -> str:
    """Where the library lives: SPEAKERS__DATABASE_URL, else JOBS_DATABASE_URL, else DATA_DIR/speakers.sqlite3."""
    return library.database_url or settings.jobs_database_url or str(settings.data_dir / SQLITE_FILE)


def open_speaker_store(settings: ServiceSettings, library: SpeakerLibrarySettings) -> SpeakerStore:
    target = speaker_database(settings, library)
    from pathlib import Path

    db_target = target if "://" in target else Path(target)
    return SpeakerStore(open_database(db_target, SPEAKERS_SCHEMA, pool_size=2, name="whisper-speakers"), library)
