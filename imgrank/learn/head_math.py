"""A head as numpy runs it: standardise, the layers, Platt's calibration (arrays only). The head's
file format, checks and feature layout are in model.py."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SCORE_ROWS = 8192  # photos scored at a time: 8192 x 771 float32 is 25 MB a copy


@dataclass
class Head:
    """A trained head: weights (mean, std, then layer i's w{i}/b{i}) and its metadata."""

    weights: dict[str, np.ndarray]
    meta: dict
    path: Path | None = None

    @property
    def spec(self) -> dict:
        return self.meta["feature_spec"]

    def logit(self, x: np.ndarray) -> np.ndarray:
        """Raw feature matrix (N×n_features, NaN where a metadata value is unknown) -> the network's logit.
        In slices of SCORE_ROWS photos: a whole folder at once would copy its features twice more."""
        if len(x) > SCORE_ROWS:
            return np.concatenate([self.logit(x[i : i + SCORE_ROWS]) for i in range(0, len(x), SCORE_ROWS)])
        if "centroids" in self.weights:
            x = with_contrast(x, self.weights["centroids"])
        h = standardise(x, self.weights["mean"], self.weights["std"])
        n_layers = self.meta["n_layers"]
        for i in range(n_layers):
            h = h @ self.weights[f"w{i}"].T + self.weights[f"b{i}"]
            if i < n_layers - 1:
                h = np.maximum(h, 0.0)
        return h[:, 0].astype(np.float64)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """P(delete), calibrated on held-out predictions when the head carries a calibration."""
        return calibrated(self.logit(x), self.meta.get("calibration"))


def with_contrast(x: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """The features `x`, then how each photo's image vector (x's first columns) differs from the
    nearest of the folder's centroids (k-means on its photos, `contrast.centroids`): what sets a
    photo apart from the photos like it (sharper, darker, blurred), with what they share taken out."""
    centroids = np.asarray(centroids, np.float32)
    image = np.asarray(x[:, : centroids.shape[1]], np.float32)
    near = np.argmax(image @ centroids.T - 0.5 * (centroids**2).sum(1), axis=1)  # the nearest by distance
    return np.hstack([np.asarray(x, np.float32), image - centroids[near]])


def calibrated(logit: np.ndarray, calibration: dict | None) -> np.ndarray:
    """P(delete) from a logit through a Platt calibration (logistic.fit_platt); else the plain sigmoid."""
    z = np.asarray(logit, np.float64)
    floor, ceiling = 0.0, 1.0
    if calibration:
        z = calibration["a"] * z + calibration["b"]
        floor, ceiling = calibration.get("floor", 0.0), calibration.get("ceiling", 1.0)
    return floor + (ceiling - floor) / (1.0 + np.exp(-np.clip(z, -60, 60)))


def standardiser(x_train: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and std of the training rows (unknown values, NaN or infinite, are left out)."""
    with warnings.catch_warnings():  # an all-unknown metadata column is fine: it becomes 0
        warnings.simplefilter("ignore", RuntimeWarning)
        # in float64: a float32 column of values from about 1e19 on squares past float32's range,
        # and its standard deviation came out inf, so such a column went unscaled
        x64 = np.array(x_train, np.float64)
        x64[np.isinf(x64)] = np.nan
        mean = np.nanmean(x64, axis=0).astype(np.float32)
        std = np.nanstd(x64, axis=0).astype(np.float32)
    mean = np.where(np.isnan(mean), 0.0, mean).astype(np.float32)
    std = np.where(~np.isfinite(std) | (std < 1e-6), 1.0, std).astype(np.float32)
    return mean, std


def standardise(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """Standardised features (float32); unknown values (NaN or infinite) become the mean, 0."""
    z = np.asarray(x, dtype=np.float32) - np.asarray(mean, np.float32)  # new: the rest works in place
    z /= std
    np.copyto(z, 0.0, where=~np.isfinite(z))
    return z
