"""Which unlabelled photos to offer for labelling next: the review page's "most informative" queue.

By default a page drawn at random (`at_random`): on the benchmarks no queue beat labelling at random
from 30 to 180 labels (docs/learning.md), and a queue that loses to random is not the default. The
rule "badge", described below, stays for comparison (scripts/bench_queue.py).

Pure numpy, no SQL. `imgrank.review.queues.informative` reads the store and calls `choose`;
`scripts/bench_learn.py --strategy queue` calls the same `choose` in pages, retraining between
pages, and measures how many labels it saves against labelling at random.

With a head (calibrated P(delete) per photo), the page is chosen as BADGE does (Ash et al., 2020,
"Deep batch active learning by diverse, uncertain gradient lower bounds"), for a head with one
output: each candidate's gradient embedding is min(p, 1 - p) times what the head sees of it (its
standardised, block-weighted input: `view`), and the page is k-means++ seeding on those: first the
largest, then each next photo drawn with probability proportional to its squared distance from the
nearest one chosen. One rule gives uncertain photos (a long gradient) that differ from each other
in the head's own features (far apart), so one kind of doubt cannot fill the page. Candidates are
the most uncertain CANDIDATES per pick (a large folder is not held whole), less near-duplicates of
photos already labelled (their label is all but known).
The rule it replaced (uncertainty weighted by density, one pick per k-means cluster of the image
vectors, a fifth exploring) lost to labelling at random on some folders: a head unsure about tiny
images, a fact image vectors do not show, was offered 53 tiny images among 120 (bench_queue.py).
Without a head (cold start), the whole page is representatives: the folder is clustered and each
cluster gives the photo nearest its centre; when the prior scores photos, the one among the few
nearest the centre that the prior finds least wanted, to meet deletes sooner.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from imgrank.learn.evaluation import unit_rows
from imgrank.learn.neighbours import NEAR_DUP

# The default rule: labels drawn at random. Every queue tried on the learning benchmark lost to it
# between 60 and 180 labels (docs/learning.md); "badge" is the BADGE page described above.
DEFAULT_RULE = "random"
RULES = ("random", "badge")
CANDIDATES = 40  # most uncertain photos considered per photo on the page
REFERENCE = 2000  # photos sampled to cluster the folder without a head
CENTRE_CHOICES = 3  # cold start with a prior: the least wanted among this many nearest the centre


def choose(
    vectors: np.ndarray,
    p: np.ndarray | None,
    n: int,
    labelled: np.ndarray | None = None,
    prior: np.ndarray | None = None,
    seed: int = 0,
    view: Callable[[np.ndarray], np.ndarray] | None = None,
    rule: str = DEFAULT_RULE,
) -> list[tuple[int, str]]:
    """Up to n (row of `vectors`, why) to label next; why is "random" (the default rule: a uniform
    draw, `at_random`), or with rule="badge" "uncertain" (with a head) or "representative" (no head).

    vectors: image vectors of the unlabelled photos; p: calibrated P(delete) from the active head,
    or None without one; labelled: image vectors of the photos labelled so far; prior: the prior's
    scores (higher: less wanted), used when there is no head; view: rows -> the head's standardised
    input for those rows (None: the image vectors stand for it).
    """
    vectors = unit_rows(vectors)
    n = min(n, len(vectors))
    if n <= 0:
        return []
    rng = np.random.default_rng(seed)
    labelled = np.zeros((0, vectors.shape[1]), np.float32) if labelled is None else unit_rows(labelled)
    if rule == "random":
        return [(i, "random") for i in at_random(vectors, n, labelled, rng)]
    if p is None:
        everyone = np.arange(len(vectors))
        return [(i, "representative") for i in representatives(vectors, everyone, n, labelled, prior, rng)]
    return [(i, "uncertain") for i in uncertain(vectors, np.asarray(p, np.float64), n, labelled, rng, view)]


def at_random(vectors: np.ndarray, n: int, labelled: np.ndarray, rng: np.random.Generator) -> list[int]:
    """n photos drawn uniformly at random, less near-duplicates of photos already labelled (their label
    is all but known) while enough others remain."""
    order = rng.permutation(len(vectors))
    if len(labelled):
        fresh = np.zeros(len(vectors), bool)
        for start in range(0, len(order), 4096):  # a large folder in blocks, as far as the page needs
            block = order[start : start + 4096]
            fresh[block] = np.max(vectors[block] @ labelled.T, axis=1) < NEAR_DUP
            if fresh.sum() >= n:
                break
        order = np.r_[order[fresh[order]], order[~fresh[order]]]
    return [int(i) for i in order[:n]]


def uncertain(
    vectors: np.ndarray,
    p: np.ndarray,
    n: int,
    labelled: np.ndarray,
    rng: np.random.Generator,
    view: Callable[[np.ndarray], np.ndarray] | None = None,
) -> list[int]:
    """n photos by k-means++ seeding on gradient embeddings (see the module's docstring)."""
    margin = np.minimum(p, 1 - p)
    pool = np.argsort(-margin, kind="stable")[: max(CANDIDATES * n, n)]
    if len(labelled):
        fresh = np.max(vectors[pool] @ labelled.T, axis=1) < NEAR_DUP
        if fresh.sum() >= n:
            pool = pool[fresh]
    x = vectors[pool] if view is None else np.asarray(view(pool), np.float64)
    g = margin[pool, None] * np.concatenate([x, np.ones((len(pool), 1))], axis=1)  # the bias too
    picked = seeds(g, n, rng)
    if len(picked) < n:  # photos the head sees as the same: the next by margin
        taken = set(picked)
        picked += [i for i in range(len(pool)) if i not in taken][: n - len(picked)]
    return [int(pool[i]) for i in picked]


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
    labels = kmeans(x, k, rng)
    used, members = np.unique(labels, return_inverse=True)
    centres = np.stack([x[labels == c].mean(axis=0) for c in used])
    return members, centres / np.maximum(np.linalg.norm(centres, axis=1, keepdims=True), 1e-12)


def seeds(x: np.ndarray, n: int, rng: np.random.Generator) -> list[int]:
    """Up to n distinct rows of x by k-means++ seeding (scikit-learn's kmeans_plusplus): each next row
    drawn with probability growing with its squared distance from the nearest row chosen."""
    from sklearn.cluster import kmeans_plusplus  # scikit-learn: only for the "badge" rule

    n = min(n, len(np.unique(np.round(x, 9), axis=0)))  # rows that coincide give one seed between them
    # one trial per pick: plain D² sampling, as BADGE draws (scikit-learn's greedy default of several
    # trials per pick favours far-out rows over doubted ones)
    x = np.asarray(x, np.float64)
    _, picked = kmeans_plusplus(x, n, random_state=int(rng.integers(2**31)), n_local_trials=1)
    return [int(i) for i in dict.fromkeys(picked.tolist())]


def kmeans(x: np.ndarray, k: int, rng: np.random.Generator, steps: int = 8) -> np.ndarray:
    """Cluster of each row of x (unit vectors): scikit-learn's k-means, k-means++ seeded."""
    from sklearn.cluster import KMeans

    k = min(k, len(np.unique(np.round(x, 9), axis=0)))
    return KMeans(k, n_init=1, max_iter=steps, random_state=int(rng.integers(2**31))).fit_predict(x)
