"""The voiceprint store (whisper_common.speakers.store) on SQLite and PostgreSQL: owners see their own speakers
(admins everyone's), matching reads only the caller's own, names are unique per owner, limits hold, a delete and an
owner's erasure leave no row (and, in SQLite, none of the embedding's bytes in the file)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from whisper_common.db import open_database
from whisper_common.owners import Owner, Role
from whisper_common.speakers.errors import LibraryFull, SpeakerNameTaken
from whisper_common.speakers.settings import SpeakerLibrarySettings
from whisper_common.speakers.store import SPEAKERS_SCHEMA, NewSample, SpeakerStore

ALICE, BOB, ADMIN = Owner("alice"), Owner("bob"), Owner("root", Role.ADMIN)


def sample(seed: int, model: str = "m1", audio: bytes | None = None) -> NewSample:
    vector = np.random.default_rng(seed).normal(size=256).astype(np.float32)
    return NewSample(4.0, 3.5, model, vector / np.linalg.norm(vector), audio)


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> SpeakerStore:
    target: str | Path = tmp_path / "speakers.sqlite3"
    if request.param == "postgresql":
        target = request.getfixturevalue("postgres_url")
    db = open_database(target, SPEAKERS_SCHEMA)
    with db.transaction() as tx:  # a fresh library per test on the module's PostgreSQL database
        tx.execute("DELETE FROM speaker_samples")
        tx.execute("DELETE FROM speakers")
    store = SpeakerStore(db, SpeakerLibrarySettings(max_voiceprints=3, max_samples=3))
    yield store
    store.close()


def test_owners_see_their_own_and_admins_everyones(store: SpeakerStore) -> None:
    maria = store.create("alice", "Maria", [sample(1)])
    tom = store.create("bob", "Tom", [sample(2), sample(3)])
    assert store.get(ALICE, maria.id) is not None and store.get(BOB, maria.id) is None
    assert store.get(ADMIN, maria.id) is not None and store.get(ADMIN, tom.id) is not None
    assert [s.name for s in store.list(ALICE, 10)] == ["Maria"]
    assert {s.name for s in store.list(ADMIN, 10)} == {"Maria", "Tom"}
    assert len(store.get(BOB, tom.id).samples) == 2  # type: ignore[union-attr]
    assert store.add_samples(BOB, maria.id, [sample(4)]) is None and store.delete(BOB, maria.id) is False
    # Matching reads the caller's own voiceprints only, an admin's too.
    assert [v.name for v in store.voiceprints("alice")] == ["Maria"]
    assert store.voiceprints("root") == []
    assert [v.name for v in store.voiceprints("bob", ["Tom", "Maria"])] == ["Tom"]
    assert [v.name for v in store.voiceprints("bob", [tom.id])] == ["Tom"]
    found = store.voiceprints("alice")[0].embeddings["m1"][0]
    assert np.allclose(found, sample(1).embedding)


def test_names_are_unique_per_owner_and_limits_hold(store: SpeakerStore) -> None:
    first = store.create("alice", "Maria", [sample(1)])
    with pytest.raises(SpeakerNameTaken, match=first.id):
        store.create("alice", "Maria", [sample(2)])
    store.create("bob", "Maria", [sample(3)])  # another owner's Maria is another speaker
    store.create("alice", "Tom", [sample(4)])
    store.create("alice", "Ann", [sample(5)])
    with pytest.raises(LibraryFull):
        store.create("alice", "Eve", [sample(6)])
    store.add_samples(ALICE, first.id, [sample(7), sample(8)])
    with pytest.raises(LibraryFull):
        store.add_samples(ALICE, first.id, [sample(9)])
    page = store.list(ALICE, 2)
    assert [s.name for s in page] == ["Ann", "Maria"]
    assert [s.name for s in store.list(ALICE, 2, after=page[-1].id)] == ["Tom"]


def test_models_are_recorded_per_sample(store: SpeakerStore) -> None:
    maria = store.create("alice", "Maria", [sample(1, "old-model")])
    store.add_samples(ALICE, maria.id, [sample(2, "new-model")])
    assert store.models() == {"old-model": 1, "new-model": 1}
    embeddings = store.voiceprints("alice")[0].embeddings
    assert set(embeddings) == {"old-model", "new-model"}


def test_delete_and_erasure_leave_nothing(store: SpeakerStore, tmp_path: Path) -> None:
    audio = b"\x11\x22" * 4000
    maria = store.create("alice", "Maria", [sample(1, audio=audio)])
    store.create("alice", "Tom", [sample(2)])
    kept = store.create("bob", "Tom", [sample(3)])
    assert store.get(ALICE, maria.id).samples[0].audio_kept  # type: ignore[union-attr]
    assert store.delete(ALICE, maria.id)
    assert store.get(ADMIN, maria.id) is None and [v.name for v in store.voiceprints("alice")] == ["Tom"]
    assert store.erase_owner("alice") == 1
    assert store.list(ADMIN, 10)[0].id == kept.id and len(store.list(ADMIN, 10)) == 1
    if store.db.backend == "sqlite":
        raw = b"".join(path.read_bytes() for path in tmp_path.glob("speakers.sqlite3*"))
        assert sample(1).embedding.astype("<f4").tobytes()[:64] not in raw
        assert audio[:64] not in raw and b"Maria" not in raw
