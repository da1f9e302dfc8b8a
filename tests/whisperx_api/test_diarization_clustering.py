"""clustering.py on synthetic d-vectors: blobs around distinct directions, runs of windows in time."""
from __future__ import annotations

import numpy as np

from whisperx_api.diarize.clustering import cluster_speakers


def _runs(voices: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(voices, 32))
    truth = np.repeat(np.tile(np.arange(voices), 3), 20)  # each voice speaks three 20-window turns
    embeddings = centres[truth] + rng.normal(scale=0.35, size=(len(truth), 32))
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    index = np.arange(len(truth))
    return embeddings, truth, np.abs(index[:, None] - index[None, :]) < 6


def _same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    return len(set(zip(a.tolist(), b.tolist()))) == len(set(a.tolist())) == len(set(b.tolist()))


def test_count_and_labels_are_found_deterministically() -> None:
    for voices in (1, 2, 3, 4):
        embeddings, truth, shared = _runs(voices)
        labels = cluster_speakers(embeddings, 1, 6, shared)
        assert _same_partition(labels, truth), voices
        assert np.array_equal(labels, cluster_speakers(embeddings, 1, 6, shared))


def test_fixed_count_is_honoured() -> None:
    embeddings, _, shared = _runs(2)
    for count in (1, 3):
        assert len(set(cluster_speakers(embeddings, count, count, shared).tolist())) == count
