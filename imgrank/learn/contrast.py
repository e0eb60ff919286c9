"""How a photo differs from the photos like it: the folder's photos in k-means clusters, and each
photo's image vector less its cluster's centre (`head_math.with_contrast`), as one more block of
features for the regression.

An owner who deletes the worst shots of everything (blurred, dark, badly framed) deletes along a
direction the image vectors hardly vary along next to what they show: a kind of photo, an event, a
place. A regression on a few labels learns what the deletes it saw show instead. Less the centre of
the photos like it, a photo's vector keeps what sets it apart from them; along that block the
quality direction stands out of what its neighbours share, and the regression learns it from a few
labels. A taste by kind loses nothing: the image vector itself is still there.

On bench_suite's folders (20 seeds, 20-100 labels, six tastes), this block turned the quality taste
from 0.022-0.030 behind the regression on the image vector alone into a tie or better, and raised
the mixed and rare tastes by 0.01-0.05 (docs/learning.md). Its prior is CONTRAST_PRIOR (the scale of
its standardised columns against the others' 1): at 1 the 256 more columns cost the kinds taste
0.02-0.03, at 0.5 the quality taste kept less of its gain.
"""

from __future__ import annotations

import warnings

import numpy as np

CENTROIDS = 50  # k-means clusters of the folder's photos (fewer with fewer than 4 photos a cluster)
CONTRAST_PRIOR = 0.7  # the prior scale of the contrast block's standardised columns


def centroids(library: np.ndarray | None, image_dim: int, k: int, seed: int = 0) -> np.ndarray | None:
    """Centres of k clusters (scikit-learn's KMeans, k-means++) of the image vectors (the first
    `image_dim` columns) of `library`, a sample of the folder's photos; None without a sample, or
    with too few photos for two clusters of four."""
    if library is None or k < 2:
        return None
    image = np.asarray(library[:, :image_dim], np.float32)
    image = image[np.isfinite(image).all(1)]
    k = min(k, len(image) // 4)
    if k < 2:
        return None
    from sklearn.cluster import KMeans  # the `train` extra
    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings():  # a folder of copies has fewer distinct photos than clusters: fine
        warnings.simplefilter("ignore", ConvergenceWarning)
        fit = KMeans(k, n_init=1, random_state=seed).fit(image)
    return fit.cluster_centers_.astype(np.float32)
