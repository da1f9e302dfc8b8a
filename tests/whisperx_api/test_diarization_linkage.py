"""agglomerative.py on synthetic d-vectors: voices as blobs around distinct directions, speaking in runs of windows."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.cluster.hierarchy import linkage

from whisperx_api.diarize.agglomerative import LinkageOptions, _average_linkage, cluster_windows, viterbi


def _meeting(voices: int, seed: int = 3, turns_each: int = 6, windows_per_turn: int = 24):
    """Unit window vectors of `voices` voices taking turns (uneven order), their truth, and segments of 8 windows."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(voices, 64))
    order = rng.permutation(np.repeat(np.arange(voices), turns_each))
    truth = np.repeat(order, windows_per_turn)
    vectors = centres[truth] / np.linalg.norm(centres[truth], axis=1, keepdims=True) + rng.normal(
        scale=0.09, size=(len(truth), 64)
    )
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    segments = np.arange(len(truth)) // 8
    return vectors, truth, segments


def _agreement(labels: np.ndarray, truth: np.ndarray) -> float:
    """Share of windows whose label maps to their true voice under the best one-to-one mapping."""
    from scipy.optimize import linear_sum_assignment

    counts = np.zeros((labels.max() + 1, truth.max() + 1))
    np.add.at(counts, (labels, truth), 1)
    rows, columns = linear_sum_assignment(-counts)
    return counts[rows, columns].sum() / len(truth)


@pytest.mark.parametrize("voices", [1, 2, 4, 7, 10])
def test_count_and_turns_found(voices: int) -> None:
    vectors, truth, segments = _meeting(voices)
    labels = cluster_windows(vectors, segments, 0.5, 1, 16)
    assert labels.max() + 1 == voices
    assert _agreement(labels, truth) > 0.97
    assert np.array_equal(labels, cluster_windows(vectors, segments, 0.5, 1, 16))  # deterministic


def test_chunked_linking_finds_the_same_voices() -> None:
    vectors, truth, segments = _meeting(5, turns_each=12)
    whole = cluster_windows(vectors, segments, 0.5, 1, 16)
    chunked = cluster_windows(vectors, segments, 0.5, 1, 16, LinkageOptions(max_segments=40))
    assert segments.max() + 1 > 3 * 40  # really in several chunks
    assert chunked.max() + 1 == 5
    assert _agreement(chunked, truth) > 0.97 and _agreement(whole, truth) > 0.97


def test_bounds_move_the_cut() -> None:
    vectors, _, segments = _meeting(6)
    assert cluster_windows(vectors, segments, 0.5, 1, 3).max() + 1 <= 3
    assert cluster_windows(vectors, segments, 0.5, 8, 8).max() + 1 == 8
    assert cluster_windows(vectors, segments, 0.5, 2, 2).max() + 1 == 2


def test_too_little_speech_is_no_speaker() -> None:
    vectors, truth, segments = _meeting(3)
    # a fourth voice says one short thing (one segment of 8 windows at 0.5 s: 4 s, below 5 s)
    stranger = np.random.default_rng(9).normal(size=64)
    vectors[:8] = stranger / np.linalg.norm(stranger)
    assert cluster_windows(vectors, segments, 0.5, 1, 16).max() + 1 == 3


def test_weighted_average_linkage_is_upgma() -> None:
    vectors, _, _ = _meeting(3, turns_each=2, windows_per_turn=6)
    ours = _average_linkage(vectors, np.ones(len(vectors)) + 1e-9)  # not all ones: our own code, not scipy's
    theirs = linkage(vectors, method="average", metric="cosine")
    assert np.allclose([similarity for _, _, similarity in ours], 1 - theirs[:, 2], atol=1e-6)
    assert [(a, b) for a, b, _ in ours] == [(int(a), int(b)) for a, b in theirs[:, :2]]


def test_viterbi_ignores_a_single_odd_window_and_follows_a_change() -> None:
    scores = np.array([[0.9, 0.5]] * 5 + [[0.5, 0.9]] + [[0.9, 0.5]] * 5 + [[0.5, 0.9]] * 6)
    path = viterbi(scores, penalty=1.0)
    assert path.tolist() == [0] * 11 + [1] * 6
