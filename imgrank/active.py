"""Which unlabelled photos to offer for labelling next: the review page's "most informative" queue.

Pure numpy, no SQL. `imgrank.review.queues.informative` reads the store and calls `choose`;
`scripts/bench_learn.py --strategy queue` calls the same `choose` in pages, retraining between
pages, and measures how many labels it saves against labelling at random.

With a head (calibrated P(delete) per photo):
1. uncertainty 1 - |2p - 1|: photos the head cannot call teach it the most, and with few deletes
   (about 1 in 5) the photos near P = 0.5 hold far more deletes than a random pick does;
2. the most uncertain candidates, less near-duplicates of photos already labelled (their label is
   all but known), weighted by density: the mean similarity to their nearest neighbours in the
   folder, so an odd one-off is not preferred to a photo that stands for many;
3. diversity: the weighted candidates are clustered into one cluster per pick (k-means++ seeds,
   a few Lloyd steps) and each cluster gives its heaviest photo, so one kind of photo cannot fill
   the page;
4. part of every page explores: representatives of the folder's clusters that hold no label yet,
   since a head is most confidently wrong where it has seen nothing.
Without a head (cold start), the whole page is representatives: the folder is clustered and each
cluster gives the photo nearest its centre; when the prior scores photos, the one among the few
nearest the centre that the prior finds least wanted, to meet deletes sooner.
"""

from __future__ import annotations

import numpy as np

from imgrank.neighbours import NEAR_DUP

POOL_PER_PICK = 8  # uncertain candidates considered per photo on the page
EXPLORE = 0.2  # share of a page given to clusters of the folder that no label covers
REFERENCE = 2000  # photos sampled to estimate density and coverage
NEIGHBOURS = 10  # density: mean similarity to this many nearest reference photos
DENSITY_POWER = 1.0  # how much density weighs against uncertainty (0: not at all)
CENTRE_CHOICES = 3  # cold start with a prior: the least wanted among this many nearest the centre


def choose(
    vectors: np.ndarray,
    p: np.ndarray | None,
    n: int,
    labelled: np.ndarray | None = None,
    prior: np.ndarray | None = None,
    seed: int = 0,
) -> list[tuple[int, str]]:
    """Up to n (row of `vectors`, why) to label next, most useful first; why is "uncertain" (near
    the head's boundary), "unexplored" (a kind no label covers) or "representative" (no head yet).

    vectors: image vectors of the unlabelled photos; p: calibrated P(delete) from the active head,
    or None without one; labelled: image vectors of the photos labelled so far; prior: the prior's
    scores (higher: less wanted), used when there is no head.
    """
    vectors = _unit(vectors)
    n = min(n, len(vectors))
    if n <= 0:
        return []
    rng = np.random.default_rng(seed)
    labelled = np.zeros((0, vectors.shape[1]), np.float32) if labelled is None else _unit(labelled)
    if p is None:
        everyone = np.arange(len(vectors))
        return [(i, "representative") for i in representatives(vectors, everyone, n, labelled, prior, rng)]
    n_explore = int(round(EXPLORE * n)) if len(labelled) else 0
    picked = uncertain(vectors, np.asarray(p, np.float64), n - n_explore, labelled, rng)
    out = [(i, "uncertain") for i in picked]
    if n_explore:
        rest = np.setdiff1d(np.arange(len(vectors)), picked)
        covered = np.concatenate([labelled, vectors[picked]])
        out += [(i, "unexplored") for i in representatives(vectors, rest, n_explore, covered, None, rng)]
    return out


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def uncertain(
    vectors: np.ndarray, p: np.ndarray, n: int, labelled: np.ndarray, rng: np.random.Generator
) -> list[int]:
    """n photos near the boundary, dense rather than odd, one per cluster of the candidates."""
    if n <= 0:
        return []
    u = 1 - np.abs(2 * p - 1)
    pool = np.argsort(-u, kind="stable")[: max(POOL_PER_PICK * n, n)]
    if len(labelled):
        fresh = np.max(vectors[pool] @ labelled.T, axis=1) < NEAR_DUP
        if fresh.sum() >= n:
            pool = pool[fresh]
    weight = u[pool] * density(vectors[pool], vectors, rng) ** DENSITY_POWER
    clusters = kmeans(vectors[pool], n, weight, rng)
    best: dict[int, int] = {}
    for i, c in enumerate(clusters):
        if c not in best or weight[i] > weight[best[c]]:
            best[c] = i
    picked = [int(pool[i]) for i in sorted(best.values(), key=lambda i: -weight[i])]
    if len(picked) < n:  # fewer clusters than picks (duplicates): the next heaviest
        taken = set(picked)
        picked += [int(pool[i]) for i in np.argsort(-weight) if int(pool[i]) not in taken][: n - len(picked)]
    return picked


def representatives(
    vectors: np.ndarray,
    among: np.ndarray,
    n: int,
    covered: np.ndarray,
    prior: np.ndarray | None,
    rng: np.random.Generator,
) -> list[int]:
    """n rows of `among` (indices into vectors) that stand for the folder's kinds: cluster a sample
    into more groups than needed, take the biggest group no photo in `covered` (or already taken)
    is near, n times, and from each the photo nearest its centre (with a prior: the least wanted
    of the few nearest). Small groups, an odd photo's own, are left: they stand for little."""
    sample = among[rng.choice(len(among), size=min(len(among), max(REFERENCE, 20 * n)), replace=False)]
    k = min(len(sample), 2 * n + _covered_clusters(covered, n))
    x = vectors[sample]
    members, centres = _centres(x, k, rng)
    size = np.bincount(members, minlength=len(centres)).astype(np.float64)
    near = np.max(centres @ covered.T, axis=1) if len(covered) else np.zeros(len(centres))
    kept: list[int] = []
    for _ in range(min(n, len(centres))):
        score = size * np.clip(1 - near, 0, None)
        score[kept] = -1
        kept.append(int(np.argmax(score)))
        near = np.maximum(near, centres @ centres[kept[-1]])
    centres = centres[kept]
    sims = x @ centres.T
    picked: list[int] = []
    for c in range(len(centres)):
        order = np.argsort(-sims[:, c], kind="stable")[: CENTRE_CHOICES + len(picked)]
        choices = [int(sample[i]) for i in order if int(sample[i]) not in picked]
        choices = choices[:CENTRE_CHOICES] if prior is not None else choices[:1]
        if choices:
            picked.append(max(choices, key=lambda i: prior[i]) if prior is not None else choices[0])
    return picked[:n]


def _covered_clusters(covered: np.ndarray, n: int) -> int:
    """Extra clusters to make so that n uncovered ones remain: as many as labelled photos, capped."""
    return min(len(covered), 4 * n)


def _centres(x: np.ndarray, k: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(cluster of each row, unit centres) of x by spherical k-means with k-means++ seeds."""
    labels = kmeans(x, k, np.ones(len(x)), rng)
    used, members = np.unique(labels, return_inverse=True)
    centres = np.stack([x[labels == c].mean(axis=0) for c in used])
    return members, centres / np.maximum(np.linalg.norm(centres, axis=1, keepdims=True), 1e-12)


def kmeans(x: np.ndarray, k: int, weight: np.ndarray, rng: np.random.Generator, steps: int = 8) -> np.ndarray:
    """Cluster of each row of x (unit vectors) in weighted spherical k-means, k-means++ seeded."""
    k = min(k, len(x))
    w = np.maximum(np.asarray(weight, np.float64), 1e-12)
    first = int(rng.choice(len(x), p=w / w.sum()))
    centres = [x[first]]
    dist = np.maximum(1 - x @ x[first], 0)
    for _ in range(k - 1):
        score = w * dist
        if score.sum() <= 0:
            break
        i = int(rng.choice(len(x), p=score / score.sum()))
        centres.append(x[i])
        dist = np.minimum(dist, np.maximum(1 - x @ x[i], 0))
    c = np.stack(centres)
    wx = (w[:, None] * x).astype(np.float32)
    for _ in range(steps):
        onehot = (np.argmax(x @ c.T, axis=1)[:, None] == np.arange(len(c))).astype(np.float32)
        sums = onehot.T @ wx
        norms = np.linalg.norm(sums, axis=1, keepdims=True)
        c = np.where(norms > 1e-12, sums / np.maximum(norms, 1e-12), c)  # an emptied centre stays
    return np.argmax(x @ c.T, axis=1)


def density(candidates: np.ndarray, folder: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Mean cosine similarity of each candidate to its nearest photos in a sample of the folder
    (itself left out): high in a crowd of alike photos, low for an odd one-off."""
    ref = folder[rng.choice(len(folder), size=min(len(folder), REFERENCE), replace=False)]
    sims = candidates @ ref.T
    sims[sims > 0.9999] = -1  # the candidate itself
    k = min(NEIGHBOURS, sims.shape[1])
    top = np.partition(sims, sims.shape[1] - k, axis=1)[:, -k:]
    return np.clip(top.mean(axis=1), 0, None)
