"""The directions a sample of the folder's photos differs along beyond noise: between the families of
its file names (`regression_space` keeps the name vector to them), and between the shots of its
bursts (`differences`).

Shots of one burst differ in what an owner culls by: sharpness, exposure, a blink, a tilt. Along the
directions the folder's near-duplicates differ along, the contrast block (how a photo differs from
the photos like it, `contrast.py`) gets DIFFER_PRIOR times its prior scale, so a taste along them is
learnt from a few labels, as the keeper learns a group's best shot from them (`keeper.py`), but
only when the labels' evidence says they follow those directions (`evidence.prior_gain`). On
bench_suite's folders (20 seeds, 20-500 labels) it raised held-out AP by 0.06-0.10 on the quality
taste, 0.04-0.07 on the mixed one and 0.04-0.05 on image-only deletes, cost the kinds taste at most
0.008, and raised the flipped labels `suspects` finds at 50 labels from 0.68 to 0.72
(docs/learning.md).
"""

from __future__ import annotations

import numpy as np

from imgrank.learn.evaluation import MAX_GROUP, near_duplicate_groups
from imgrank.learn.neighbours import NEAR_DUP

DIFFER_PRIOR = 2.0  # the prior scale along the directions near-duplicates differ along, times the block's
DIFFER_GROUPS = 20  # near-duplicate groups (of two photos or more) a sample needs for those directions
DIFFER_MAX = 8  # the most of them boosted (the strongest first)


def beyond_noise(z: np.ndarray) -> np.ndarray:
    """An orthonormal basis (columns) of the directions along which the rows `z` (e.g. a sample of the
    folder's file-name vectors, centred and scaled as a whole) differ beyond noise: the right
    singular vectors whose singular value is above Gavish and Donoho's optimal hard threshold for
    noise of unknown level, omega(beta) times the median singular value, beta the aspect ratio of z
    ("The optimal hard threshold for singular values is 4/sqrt(3)", IEEE Trans. Inf. Theory 60,
    2014), which assumes noise alike in every column. Names that are one family plus noise give
    none; three families, two. The singular values and vectors come from the eigenvectors of zᵀz
    (columns x columns): a tenth of the SVD's time on a sample of 5,000 photos, which `train` pays
    on every space it builds."""
    z = np.asarray(z, np.float64)
    k = min(z.shape)  # the singular values the SVD would give, largest first
    eigenvalues, vectors = np.linalg.eigh(z.T @ z)
    s = np.sqrt(np.clip(eigenvalues[::-1][:k], 0, None))
    beta = k / max(z.shape)
    omega = 0.56 * beta**3 - 0.95 * beta**2 + 1.82 * beta + 1.43
    return vectors[:, ::-1][:, :k][:, s > omega * np.median(s)]


def differences(
    library: np.ndarray | None, image_dim: int, near_dup: float = NEAR_DUP, max_group: int = MAX_GROUP
) -> np.ndarray | None:
    """An orthonormal basis (image_dim x k) of the directions along which near-duplicates of `library`
    (a sample of the folder's photos; its first `image_dim` columns are the image vectors) differ
    beyond noise: each member of a near-duplicate group (`near_duplicate_groups`, as `dupes` finds
    them) less its group's mean, scaled as a whole, then `beyond_noise`, at most DIFFER_MAX of them.
    None with fewer than DIFFER_GROUPS groups of two photos or more, or no direction above the noise."""
    if library is None or not image_dim:
        return None
    image = np.asarray(library[:, :image_dim], np.float64)
    image = image[np.isfinite(image).all(1)]
    groups = near_duplicate_groups(image, near_dup, max_group)
    _, group, size = np.unique(groups, return_inverse=True, return_counts=True)
    if (size > 1).sum() < DIFFER_GROUPS:
        return None
    means = np.zeros((len(size), image_dim))
    np.add.at(means, group, image)
    means /= size[:, None]
    shot = size[group] > 1
    apart = image[shot] - means[group[shot]]
    directions = beyond_noise(apart / np.sqrt((apart**2).sum(1).mean()))[:, :DIFFER_MAX]
    return directions if directions.shape[1] else None
