"""Voices against references: the one-to-one assignment of diarized speakers (or any voices) to named references by
cosine similarity of their d-vectors, at or above a threshold.

    references = [Reference("Maria", embedding, voiceprint_id="spk_...")]
    matches = assign(speaker_embeddings @ stack(references).T, references, threshold=0.84)
    matches[0]   # Match("Maria", 0.91, "spk_...") for speaker 0; a speaker without a match is absent

The pairing is the Hungarian assignment (each reference names at most one speaker, each speaker takes at most one
name), then only pairs at or above the threshold are kept: a reference may match nobody (its voice is absent), and a
voice nobody matches keeps its own label.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, eq=False)
class Reference:
    """A named voice: a voiceprint of the library (`voiceprint_id`) or a clip sent with the request (None)."""

    name: str
    embedding: np.ndarray
    voiceprint_id: str | None = None


@dataclass(frozen=True)
class Match:
    name: str
    similarity: float
    voiceprint_id: str | None = None


def unit(vector: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(vector))
    return (vector / norm).astype(np.float32) if norm > 0 else np.asarray(vector, dtype=np.float32)


def mean_embedding(embeddings: Sequence[np.ndarray]) -> np.ndarray:
    """A voiceprint of several clips: the unit-length mean of their unit-length d-vectors (resemblyzer's speaker
    embedding)."""
    return unit(np.mean(np.stack([unit(vector) for vector in embeddings]), axis=0))


def assign(similarity: np.ndarray, references: Sequence[Reference], threshold: float) -> dict[int, Match]:
    """`similarity`: voices × references. The matches by voice index (one-to-one, at or above `threshold`)."""
    if similarity.size == 0:
        return {}
    from scipy.optimize import linear_sum_assignment

    similarity = np.nan_to_num(similarity, nan=-1.0)  # a voiceless turn or clip matches nobody
    rows, columns = linear_sum_assignment(-similarity)
    return {
        int(row): Match(references[column].name, round(float(similarity[row, column]), 3),
                        references[column].voiceprint_id)
        for row, column in zip(rows, columns)
        if similarity[row, column] >= threshold
    }
