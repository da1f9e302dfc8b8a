"""Spectral clustering of speaker embeddings on a precomputed affinity, in numpy/scipy alone.

scikit-learn's `SpectralClustering(affinity="precomputed")` did the same job, but importing sklearn.cluster costs
about 100 MB of resident memory. The embedding is the normalised Laplacian's leading eigenvectors, as sklearn
computes it, and k-means with several k-means++ starts from a fixed seed assigns the labels, so a given affinity always
gives the same labels.

When the count is not fixed, two questions are asked apart. One voice or several: the normalised maximum eigengap
(NME-SC) on the affinity without the pairs of windows that share audio (neighbouring windows are alike whoever
speaks, and those pairs made short recordings look like one voice and mixes like five). How many, when several:
the count whose clustering has the highest mean silhouette (cosine distance, again without those pairs); on
clips with 2-4 voices it found the count more often than the eigengap, which both over- and under-counted. The
clustering itself runs on the affinity blurred along both time axes (Wang et al., 2018).
"""
from __future__ import annotations

import warnings

import numpy as np
from scipy.ndimage import gaussian_filter


def cluster_speakers(embeddings: np.ndarray, lowest: int, highest: int, shared: np.ndarray) -> np.ndarray:
    """Labels for unit-length `embeddings`, between `lowest` and `highest` clusters; `shared[i, j]` marks windows
    that overlap in time."""
    similarity = embeddings @ embeddings.T
    affinity = np.clip(similarity, 0.0, 1.0)
    highest = max(highest, lowest)
    if estimate_speaker_count(np.where(shared, 0.0, affinity), lowest, highest) <= 1:
        return np.zeros(len(embeddings), dtype=int)
    distances = np.where(shared, np.nan, 1.0 - similarity)
    # Neighbouring windows are neighbouring moments: a slight blur along time evens out single odd windows.
    blurred = gaussian_filter(affinity, 1.0)
    counts = range(max(2, lowest), min(highest, len(embeddings)) + 1)
    if not counts:
        return spectral_labels(blurred, lowest)
    embedding = spectral_embedding(blurred, counts[-1])  # one eigendecomposition serves every candidate count
    candidates = [kmeans(embedding[:, :count], count) for count in counts]
    return max(candidates, key=lambda labels: silhouette(distances, labels))


def silhouette(distances: np.ndarray, labels: np.ndarray) -> float:
    """Mean silhouette of `labels`, ignoring NaN distances; -1 for fewer than two clusters."""
    clusters = int(labels.max()) + 1
    if clusters < 2:
        return -1.0
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a row with no distance to some cluster: NaN, skipped
        mean_to = np.stack(
            [np.nanmean(np.where(labels[None, :] == c, distances, np.nan), axis=1) for c in range(clusters)], axis=1
        )
        rows = np.arange(len(labels))
        own = mean_to[rows, labels]
        mean_to[rows, labels] = np.inf
        nearest = mean_to.min(axis=1)
        return float(np.nanmean((nearest - own) / np.maximum(own, nearest)))


def spectral_labels(affinity: np.ndarray, speakers: int, seed: int = 0, starts: int = 10) -> np.ndarray:
    """One label in 0..speakers-1 per row of the symmetric, non-negative `affinity`."""
    count = len(affinity)
    if speakers <= 1 or count <= 1:
        return np.zeros(count, dtype=int)
    speakers = min(speakers, count)
    return kmeans(spectral_embedding(affinity, speakers), speakers, seed, starts)


def spectral_embedding(affinity: np.ndarray, dimensions: int) -> np.ndarray:
    """The `dimensions` leading eigenvectors of D^-1/2 A D^-1/2 (the normalised Laplacian's smallest), divided by
    D^1/2: the random-walk eigenvectors, as scikit-learn's spectral_embedding returns them."""
    degree = np.sqrt(np.maximum(affinity.sum(axis=1), 1e-10))
    normalised = affinity / degree[:, None] / degree[None, :]
    count = len(affinity)
    _, vectors = _eigh(normalised, count - dimensions, count - 1)
    return vectors[:, ::-1] / degree[:, None]


def kmeans(points: np.ndarray, clusters: int, seed: int = 0, starts: int = 10, iterations: int = 100) -> np.ndarray:
    """Lloyd's k-means from `starts` k-means++ seedings; the labels of the lowest inertia."""
    rng = np.random.default_rng(seed)
    best: tuple[float, np.ndarray] | None = None
    for _ in range(starts):
        centres = _kmeans_plus_plus(points, clusters, rng)
        labels = np.full(len(points), -1)
        for _ in range(iterations):
            distances = ((points[:, None, :] - centres[None, :, :]) ** 2).sum(axis=2)
            updated = distances.argmin(axis=1)
            if np.array_equal(updated, labels):
                break
            labels = updated
            for cluster in range(clusters):
                members = points[labels == cluster]
                if len(members):
                    centres[cluster] = members.mean(axis=0)
        inertia = float(((points - centres[labels]) ** 2).sum())
        if best is None or inertia < best[0] - 1e-12:
            best = (inertia, labels)
    assert best is not None
    return best[1]


def estimate_speaker_count(affinity: np.ndarray, lowest: int, highest: int) -> int:
    """Normalised maximum eigengap spectral clustering (Park et al., 2019) picks the count.

    For each neighbourhood size p the affinity is binarised to its p nearest neighbours per row; the p whose
    Laplacian shows the sharpest eigengap relative to p wins, and that gap's position is the count.
    """
    from scipy.linalg import eigh
    from scipy.sparse.csgraph import laplacian

    if highest <= lowest:
        return lowest
    n = len(affinity)
    order = np.argsort(-affinity, axis=1)
    best: tuple[float, int] | None = None
    for p in range(max(2, n // 8), max(3, n // 2) + 1, max(1, n // 80)):
        binary = np.zeros_like(affinity)
        np.put_along_axis(binary, order[:, :p], 1.0, axis=1)
        graph = laplacian((binary + binary.T) / 2, normed=False)
        if highest + 2 < n:  # the lowest highest+1 and the largest are all that is used: much cheaper than all
            eigenvalues = np.append(
                eigh(graph, eigvals_only=True, subset_by_index=[0, highest]),
                eigh(graph, eigvals_only=True, subset_by_index=[n - 1, n - 1]),
            )
        else:
            eigenvalues = np.linalg.eigvalsh(graph)
        gaps = np.diff(eigenvalues[: highest + 1])
        window = gaps[lowest - 1 : highest]
        if len(window) == 0:
            continue
        ratio = p / (window.max() / (eigenvalues[-1] + 1e-10) + 1e-10)
        if best is None or ratio < best[0]:
            best = (ratio, lowest + int(np.argmax(window)))
    return best[1] if best else lowest


def _kmeans_plus_plus(points: np.ndarray, clusters: int, rng: np.random.Generator) -> np.ndarray:
    centres = [points[rng.integers(len(points))]]
    closest = ((points - centres[0]) ** 2).sum(axis=1)
    for _ in range(1, clusters):
        total = closest.sum()
        pick = rng.choice(len(points), p=closest / total) if total > 0 else rng.integers(len(points))
        centres.append(points[pick])
        closest = np.minimum(closest, ((points - points[pick]) ** 2).sum(axis=1))
    return np.array(centres, dtype=float)


def _eigh(matrix: np.ndarray, first: int, last: int) -> tuple[np.ndarray, np.ndarray]:
    """Eigenpairs first..last (ascending) of a symmetric matrix, with a fixed sign per eigenvector."""
    from scipy.linalg import eigh

    values, vectors = eigh(matrix, subset_by_index=[first, last])
    signs = np.sign(vectors[np.abs(vectors).argmax(axis=0), np.arange(vectors.shape[1])])
    return values, vectors * np.where(signs == 0, 1.0, signs)
