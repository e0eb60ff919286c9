"""The L2 logistic regression (the baseline, the label check) and the spaces heads are fit in: the
standardised features, the file name's vector kept to the directions the folder's names differ
along (`regression_space`), or the L2 prior shaped by feature block and by the folder's photos
(`input_space`: the MLP's, and `TrainConfig.balance_blocks`).

Fit by scikit-learn (imported where it fits: the `train` extra); scored with numpy like any head
(`predict`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from imgrank.errors import ImgrankError
from imgrank.learn.contrast import CONTRAST_PRIOR
from imgrank.learn.directions import DIFFER_PRIOR, beyond_noise
from imgrank.learn.head_math import Head, standardise, standardiser


def block_scale(widths: tuple[int, ...]) -> np.ndarray:
    """Per-column weight after standardising, so that every block of features has the same total prior
    variance: a column of a block of w columns is multiplied by sqrt(widest / w). Column by column, the
    512 columns of the image and name vectors would hold 512 of 515 shares of the L2 prior, though each
    cheap fact (pixels, shape, bytes) is a judgement of its own and one embedding coordinate means
    little. One share per block lets a few labels lean on the facts (tiny images, screenshots)."""
    widths = tuple(w for w in widths if w > 0)
    widest = max(widths)
    return np.concatenate([np.full(w, np.sqrt(widest / w), np.float32) for w in widths])


def spec_blocks(spec: dict) -> tuple[int, int]:
    """Column widths of a feature spec's leading blocks: the image vector, the name vector. The
    columns after them (metadata, and the prior's features where a head takes them) are the cheap facts."""
    return (spec["image_dim"], spec["name_dim"])


@dataclass
class Space:
    """What a head's first layer sees: the features standardised (`mean`, `std`), times `basis`.

    An L2 penalty on weights over this space is a Gaussian prior over the standardised features whose
    covariance is basis·basisᵀ: the basis sets which directions a few labels can lean on. A head is
    stored as plain standardise-then-network: the basis folds into its first layer (`fold`)."""

    mean: np.ndarray
    std: np.ndarray
    basis: np.ndarray  # d×d, symmetric
    inverse: np.ndarray  # its pseudo-inverse: a stored first layer back in this space (`unfold`)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return (standardise(x, self.mean, self.std) @ self.basis).astype(np.float32)

    def fold(self, w: np.ndarray) -> np.ndarray:
        """First-layer weights over this space -> over the standardised features."""
        return (w @ self.basis.T).astype(np.float32)

    def unfold(self, w: np.ndarray) -> np.ndarray:
        return (w @ self.inverse.T).astype(np.float32)


def input_space(
    x: np.ndarray, blocks: tuple[int, ...] | None = None, library: np.ndarray | None = None
) -> Space:
    """The space a head is fit in. Without `blocks`: plain standardisation on the rows `x`. With them
    (the leading feature blocks' widths, `spec_blocks`; the columns after them are the cheap facts),
    each block gets one share of the prior (`block_scale`). With `library` (the leading blocks of a
    sample of the folder's photos, labelled or not), the embedding blocks are standardised on the
    library and their prior's covariance is the library's own (`covariance_root`): a weight direction
    is as likely a priori as the photos vary along it, so a few labels learn along the directions
    the folder's photos differ by (kinds of photo, screenshots, quality) instead of spreading over
    hundreds of directions that hardly vary. That is what unlabelled photos teach. Measured on
    bench_learn (40 seeds, random labels): held-out AP +0.03 at 20, 50 and 100 labels, +0.02 at 200
    (2 seeds: -0.01 at 500, +0.005 at 2,000); flips found at 50 labels 0.69 -> 0.73."""
    mean, std = standardiser(x)
    d = x.shape[1]
    if not blocks:
        eye = np.eye(d, dtype=np.float32)
        return Space(mean, std, eye, eye)
    scale = block_scale((*blocks, d - sum(blocks)))
    basis = np.diag(scale).astype(np.float64)
    inverse = np.diag(1 / scale).astype(np.float64)
    if library is not None and len(library) > 1:
        embedded = sum(blocks)
        library = library[:, :embedded]
        mean[:embedded], std[:embedded] = standardiser(library)
        z = standardise(library, mean[:embedded], std[:embedded]).astype(np.float64)
        start = 0
        for width in blocks:
            block = slice(start, start + width)
            if width:
                basis[block, block], inverse[block, block] = covariance_root(
                    z[:, block], width * scale[start] ** 2
                )
            start += width
    return Space(mean, std, basis.astype(np.float32), inverse.astype(np.float32))


# Labels from which the regression weighs the whole file-name vector: with this many, its noise costs
# little, and a taste along a direction no family of names spans is learnt. On bench_train's folder
# (names at random, the taste partly along one of their directions; new photos' AP, whole name
# vector against the kept directions): 0.332 / 0.368 at 200 labels, 0.524 / 0.568 at 2,000, 0.608 /
# 0.633 at 5,000, 0.650 / 0.649 at 10,000, 0.680 / 0.666 at 25,000.
NAME_DIRECTIONS_BELOW = 10_000


def regression_space(
    x: np.ndarray,
    blocks: tuple[int, ...] | None = None,
    library: np.ndarray | None = None,
    contrast: int = 0,
    differ: np.ndarray | None = None,
) -> Space:
    """The space the regression is fit in: every column standardised on the labelled rows `x`. With
    the leading feature blocks' widths (`spec_blocks`) and `library` (those blocks for a sample of
    the folder's photos), the file name's vector is centred on the sample, scaled as a whole (one
    scale for its columns, which keeps its geometry: column by column, the columns its families
    differ along would have their noise shrunk and the others not, and the noise would no longer look
    like noise), and kept to the directions along which the folder's names differ beyond noise
    (`beyond_noise`): the prior puts no weight elsewhere in it.

    A folder's names come in families (camera, screenshot, messenger, an old camera's DSC_), and
    a taste the name tells (delete what the messenger saved) lies along the few directions between
    them. The rest of the 256 columns is the noise of numbers and dates, which a regression on a few
    labels otherwise fits: on bench_suite's folders (20 seeds, 20-200 labels) held-out AP +0.007 ±
    0.002 over the same draws, and the regression on every feature as good as the one on the image
    vector alone where the names say nothing (docs/learning.md). From NAME_DIRECTIONS_BELOW labels
    the whole name vector, standardised. The last `contrast` columns (`head_math.with_contrast`)
    have the prior scale `contrast.CONTRAST_PRIOR`, DIFFER_PRIOR times that along `differ` (an
    orthonormal basis of image-vector directions, `directions.differences`) in their standardised
    coordinates."""
    mean, std = standardiser(x)
    basis = np.eye(x.shape[1])
    names = slice(blocks[0], blocks[0] + blocks[1]) if blocks and len(blocks) > 1 and blocks[1] else None
    if names and library is not None and len(library) > 1 and len(x) < NAME_DIRECTIONS_BELOW:
        sample = library[:, names].astype(np.float64)
        mean[names] = sample.mean(0)
        std[names] = np.sqrt(sample.var(0).mean()) or 1.0
        v = beyond_noise((sample - mean[names]) / std[names])
        basis[names, names] = v @ v.T
    basis = basis.astype(np.float32)
    space = Space(mean, std, basis, basis)  # a projection is its own pseudo-inverse
    return with_differ(space, contrast, differ) if contrast else space


def with_differ(space: Space, contrast: int, differ: np.ndarray | None) -> Space:
    """`space` with the prior of its last `contrast` columns (the contrast block) set anew: the scale
    CONTRAST_PRIOR on their standardised columns, DIFFER_PRIOR times that along `differ` (None: no
    direction)."""
    block = slice(len(space.std) - contrast, len(space.std))
    along = np.zeros((contrast, contrast))
    if differ is not None:  # a step along a direction is a step over std in its standardised columns
        q = np.linalg.qr(differ / space.std[block][:, None])[0]
        along = q @ q.T
    basis, inverse = space.basis.copy(), space.inverse.copy()
    basis[block, block] = CONTRAST_PRIOR * (np.eye(contrast) + (DIFFER_PRIOR - 1) * along)
    inverse[block, block] = (np.eye(contrast) + (1 / DIFFER_PRIOR - 1) * along) / CONTRAST_PRIOR
    return Space(space.mean, space.std, basis, inverse)


def covariance_root(z: np.ndarray, total: float) -> tuple[np.ndarray, np.ndarray]:
    """A basis B (and its pseudo-inverse) for one block of standardised library rows `z`, such that an
    isotropic prior on weights over z·B is a prior over z's weights with the library's covariance C
    (B ∝ C^½), scaled so the block's total prior variance of the logit is `total`, as `block_scale`
    gives it: along the library's principal direction j (variance λⱼ) the logit's prior variance is
    total·λⱼ²/Σλ², where an isotropic prior gives total·λⱼ/Σλ."""
    lam, vectors = np.linalg.eigh(z.T @ z / len(z))
    lam = np.maximum(lam, 0.0)
    if not (lam**2).sum():
        eye = np.eye(z.shape[1])
        return eye, eye
    c = np.sqrt(lam * total / (lam**2).sum())
    inv = np.divide(1.0, c, out=np.zeros_like(c), where=c > 1e-6 * c.max())
    return (vectors * c) @ vectors.T, (vectors * inv) @ vectors.T


def require_sklearn() -> None:
    """One clear line when scikit-learn (the `train` extra) is missing."""
    try:
        import sklearn  # noqa: F401
    except ImportError:
        raise ImgrankError("training needs scikit-learn: pip install 'imgrank[train]'") from None


LBFGS_FROM = 2000  # rows from which `Design.path` fits by L-BFGS on float32 instead of Newton-Cholesky


def class_weights(y: np.ndarray) -> np.ndarray:
    """Per-row weights that weigh the two classes equally: a delete counts keeps/deletes times (a keep
    once), so l2=1 is scikit-learn's C=1 on the keeps' scale."""
    y = np.asarray(y, int)
    n_pos = max(int(y.sum()), 1)
    return np.where(y == 1, (len(y) - n_pos) / n_pos, 1.0)


@dataclass
class Fit:
    """One logistic regression over a Design's coordinates: P(delete) = sigmoid(coords · coef + bias)."""

    coef: np.ndarray
    bias: float


class Design:
    """The labelled rows in the space a head is fit in (`input_space`), on an orthonormal basis of the
    span of those rows. An L2 logistic regression's weights lie in the span of the rows it learns from
    (the gradient of its loss is a sum of rows), and the basis keeps lengths, so fitting on at most n
    coordinates instead of d features is the same fit: far cheaper when a few hundred labels meet 515
    features, and computed once for every fold, L2 strength and label-check split of a run."""

    def __init__(self, x: np.ndarray, space: Space):
        self.space = space
        z = space(x).astype(np.float64)
        if len(z) >= z.shape[1]:  # no fewer coordinates to be had: the features themselves
            self.basis, self.coords = np.eye(z.shape[1]), z
            return
        _, s, vt = np.linalg.svd(z, full_matrices=False)
        keep = s > 1e-8 * max(s.max(initial=0.0), 1e-300)
        self.basis = vt[keep].T  # d x r
        self.coords = z @ self.basis  # n x r

    def path(self, rows: np.ndarray, y: np.ndarray, l2s) -> list[Fit]:
        """Class-weighted L2 logistic regressions (scikit-learn's, C = 1 / l2, Newton-Cholesky) on
        `rows` (labels `y`), at each strength of `l2s` in that order, each fit starting from the one
        before (its warm start): the L2 path."""
        from sklearn.linear_model import LogisticRegression  # the `train` extra

        y = np.asarray(y, int)
        coords = self.coords[rows]
        # Newton-Cholesky costs n·d² a step; from a few thousand rows on, L-BFGS on float32 (a few
        # matrix-vector products a step) reaches the same held-out ranking: 25,000 labels, one fold's
        # path at six strengths, 7.0 s -> 0.6 s with the same AP to four places (docs/learning.md).
        if len(coords) >= LBFGS_FROM:
            coords = coords.astype(np.float32)
            model = LogisticRegression(solver="lbfgs", warm_start=True, max_iter=1000)
        else:
            model = LogisticRegression(solver="newton-cholesky", warm_start=True, max_iter=200)
        fits = []
        for l2 in l2s:
            model.set_params(C=1.0 / l2).fit(coords, y, sample_weight=class_weights(y))
            fits.append(Fit(model.coef_[0].copy(), float(model.intercept_[0])))
        return fits

    def logit(self, fit: Fit, rows: np.ndarray) -> np.ndarray:
        return self.coords[rows] @ fit.coef + fit.bias

    def predict(self, fit: Fit, rows: np.ndarray) -> np.ndarray:
        """Uncalibrated P(delete) of these labelled rows."""
        return 1.0 / (1.0 + np.exp(-np.clip(self.logit(fit, rows), -60, 60)))

    def weights(self, fit: Fit) -> dict[str, np.ndarray]:
        """The head's arrays: plain standardise-then-linear, scored by numpy like any head."""
        w = (self.basis @ fit.coef)[None, :].astype(np.float32)
        return {
            "mean": self.space.mean,
            "std": self.space.std,
            "w0": self.space.fold(w),
            "b0": np.array([fit.bias], np.float32),
        }


def fit_logistic(
    x_train: np.ndarray, y_train: np.ndarray, l2: float = 1.0, space: Space | None = None
) -> dict[str, np.ndarray]:
    """One class-weighted L2 logistic regression on these rows, as a head's arrays. Fit in `space`
    (`input_space`; default: the rows standardised)."""
    design = Design(x_train, space or input_space(x_train))
    return design.weights(design.path(np.arange(len(x_train)), y_train, (l2,))[0])


def fit_platt(logit: np.ndarray, y: np.ndarray) -> dict:
    """Platt scaling (the sigmoid of scikit-learn's CalibratedClassifierCV): a, b so that
    sigmoid(a * logit + b) matches held-out labels, with Platt's smoothed targets (a delete counts
    (n₊+1)/(n₊+2) delete, a keep 1/(n₋+2)), so a perfectly separated held-out set cannot send a to
    infinity. Fit as a scikit-learn logistic regression on the one column, each row twice, as a
    delete and as a keep, weighted by its target."""
    from sklearn.linear_model import LogisticRegression

    z, y = np.asarray(logit, np.float64), np.asarray(y, int)
    n_pos, n_neg = y.sum(), len(y) - y.sum()
    t = np.where(y == 1, (n_pos + 1) / (n_pos + 2), 1 / (n_neg + 2))
    fit = LogisticRegression(C=1e6, max_iter=1000, tol=1e-8).fit(
        np.r_[z, z][:, None], np.r_[np.ones(len(z)), np.zeros(len(z))], sample_weight=np.r_[t, 1 - t]
    )
    # No score claims more certainty than n held-out photos can show (Laplace's rule of succession):
    # P(delete) stays within 1/(n+2) of 0 and 1, squeezed, so the order of the scores is kept. Without
    # it a refit head, surer than its folds, put 27 of a 293-photo folder at a printed 1.000.
    bound = 1 / (len(z) + 2)
    return {
        "method": "platt",
        "a": float(max(fit.coef_[0, 0], 1e-3)),
        "b": float(fit.intercept_[0]),
        "floor": bound,
        "ceiling": 1 - bound,
    }


def predict(weights: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """Uncalibrated P(delete) with numpy, the way a saved head is scored."""
    return Head(weights, {"n_layers": sum(1 for k in weights if k.startswith("w"))}).predict(x)


def logit(p: np.ndarray) -> np.ndarray:
    """log(p / (1 - p)), with p kept off 0 and 1."""
    p = np.clip(np.asarray(p, np.float64), 1e-7, 1 - 1e-7)
    return np.log(p / (1 - p))
