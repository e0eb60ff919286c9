"""The keeper of a burst, learned from the owner: arrays in, arrays out (no SQL, no paths, no click).

Inside a group of near-duplicates the owner's labels are preferences, not verdicts on a photo: the
shot they kept is better than each shot they deleted *from the same group*. A pairwise logistic
regression on the differences (image vector and a few cheap facts: pixels, bytes, sharpness,
exposure) learns a utility whose highest member is the keeper. Within a group the shared content
cancels in the differences, which is why a per-photo classifier cannot learn this and a pairwise
one can.

Fitting uses scikit-learn (the `train` extra); the result is a `Keeper` of plain numbers, stored as
JSON and applied with numpy, so the daemon and `dupes` never import scikit-learn. With preferences
from fewer than MIN_GROUPS groups there is no keeper model, and the groups keep today's rule: the
lowest deletion score (the head's, else the prior's).
"""

from __future__ import annotations

import json
import warnings
from dataclasses import asdict, dataclass

import numpy as np

FACTS = ("pixels", "bytes", "sharpness", "dark", "bright", "brightness", "exposure")
# The fewest groups with a kept-and-deleted pair before the learned keeper replaces the deletion
# score: below it the regression has seen too few bursts (scripts/bench_keeper.py).
MIN_GROUPS = 5
CS = np.logspace(-2, 3, 11)  # L2 strengths tried on held-out groups
IMAGE_WEIGHTS = (1.0, 0.25, 1 / 16)  # the image block's weight against a fact's, tried likewise


def facts(width, height, size, sharpness, dark, bright, mean) -> np.ndarray:
    """N×len(FACTS) cheap facts (NaN where unknown): log pixels, log bytes, log sharpness (variance of
    the Laplacian), clipped dark and bright fractions, mean grey level in [0, 1] and its distance
    from mid-grey (a badly exposed shot is far from it)."""

    def col(values) -> np.ndarray:
        return np.array([np.nan if v is None else v for v in values], dtype=np.float64)

    w, h, s, sharp, mean = col(width), col(height), col(size), col(sharpness), col(mean) / 255.0
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.stack(
            [np.log(w * h), np.log(s), np.log1p(sharp), col(dark), col(bright), mean, np.abs(mean - 0.5)],
            axis=1,
        )
    out[~np.isfinite(out)] = np.nan
    return out


def preferences(group: np.ndarray, kept: np.ndarray, deleted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(winner, loser) row pairs: in each group (id >= 0), every kept row over every deleted row."""
    winners, losers = [], []
    for g in np.unique(group[group >= 0]):
        rows = np.flatnonzero(group == g)
        good, bad = rows[kept[rows]], rows[deleted[rows]]
        winners += np.repeat(good, len(bad)).tolist()
        losers += np.tile(bad, len(good)).tolist()
    return np.array(winners, dtype=np.int64), np.array(losers, dtype=np.int64)


@dataclass
class Keeper:
    """A linear utility over the image vector and the cheap facts; higher means keep."""

    w_image: list[float]
    w_facts: list[float]
    groups: int  # groups the preferences came from
    pairs: int
    C: float
    facts: tuple[str, ...] = FACTS
    model: str = ""  # the embedding model of the vectors it was learned on

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Keeper | None:
        """The stored keeper, or None when the text is not one (an older or damaged setting)."""
        try:
            d = json.loads(text)
            k = cls(**{**d, "facts": tuple(d["facts"])})
        except (ValueError, TypeError, KeyError):
            return None
        good = k.facts == FACTS and len(k.w_facts) == len(FACTS) and np.isfinite(k.w_image + k.w_facts).all()
        return k if good else None

    def utility(self, image: np.ndarray, fact: np.ndarray, group: np.ndarray) -> np.ndarray:
        """Per row, how much the owner would rather keep it than the others of its group (comparable
        within a group only). Facts are taken relative to the group's mean, an unknown fact as the mean."""
        if image.shape[1] != len(self.w_image):
            raise ValueError(f"keeper learned on {len(self.w_image)}-d vectors, given {image.shape[1]}-d")
        return image.astype(np.float64) @ np.array(self.w_image) + centred(fact, group) @ np.array(
            self.w_facts
        )


def centred(fact: np.ndarray, group: np.ndarray) -> np.ndarray:
    """Facts minus their group's mean (ignoring unknowns); unknown facts become 0, the mean."""
    out = np.zeros_like(fact, dtype=np.float64)
    _, inverse = np.unique(group, return_inverse=True)
    known = np.isfinite(fact)
    value = np.where(known, fact, 0.0)
    n = np.zeros((inverse.max() + 1 if len(inverse) else 0, fact.shape[1]))
    total = np.zeros_like(n)
    np.add.at(n, inverse, known)
    np.add.at(total, inverse, value)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = total / n
    out[known] = (fact - mean[inverse])[known]
    return out


def fit(
    image: np.ndarray,
    fact: np.ndarray,
    winners: np.ndarray,
    losers: np.ndarray,
    pair_group: np.ndarray,
    min_groups: int = MIN_GROUPS,
) -> Keeper | None:
    """Learn the keeper from (winner, loser) pairs of rows (pair_group: the group of each pair), or None
    with pairs from fewer than `min_groups` groups.

    A logistic regression on symmetrised differences ((d, kept), (-d, not); no intercept), each fact
    scaled to unit spread. The image vector's many dimensions would drown one telling fact under one
    L2 strength, so its block is tried at IMAGE_WEIGHTS of that spread: the weight and the strength
    are chosen together by log loss on held-out groups (a burst's pairs on one side)."""
    from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
    from sklearn.model_selection import GroupKFold

    n_groups = len(np.unique(pair_group))
    if len(winners) == 0 or n_groups < max(min_groups, 1):
        return None
    d_image = image[winners].astype(np.float64) - image[losers]
    d_fact = fact[winners] - fact[losers]
    d_fact[~np.isfinite(d_fact)] = 0.0  # unknown on either side: no evidence either way
    s_image = float(np.sqrt((d_image**2).mean())) or 1.0
    s_fact = np.sqrt((d_fact**2).mean(axis=0))
    s_fact[s_fact == 0] = 1.0
    y = np.r_[np.ones(len(winners)), np.zeros(len(winners))]
    best = None  # (held-out log loss, C, coefficients, image scale)
    for weight in IMAGE_WEIGHTS:
        x = np.hstack([d_image * (weight / s_image), d_fact / s_fact])
        x = np.vstack([x, -x])
        if n_groups < 2:  # nothing to hold out: a middling strength, the image at full weight
            model = LogisticRegression(C=1.0, fit_intercept=False, max_iter=2000).fit(x, y)
            best = (0.0, 1.0, model.coef_[0], weight / s_image)
            break
        cv = list(GroupKFold(min(5, n_groups)).split(x, y, np.r_[pair_group, pair_group]))
        model = LogisticRegressionCV(Cs=CS, cv=cv, scoring="neg_log_loss", fit_intercept=False, max_iter=2000)
        with warnings.catch_warnings():  # scikit-learn 1.9 announces its attributes' new shapes
            warnings.simplefilter("ignore", FutureWarning)
            model.fit(x, y)
        scores = model.scores_  # a dict by class up to scikit-learn 1.9, an array after
        scores = np.asarray(next(iter(scores.values())) if isinstance(scores, dict) else scores)
        loss = -float(np.max(scores.reshape(len(cv), -1).mean(axis=0)))
        if best is None or loss < best[0]:
            best = (loss, float(np.ravel(model.C_)[0]), model.coef_[0], weight / s_image)
    _, C, coef, image_scale = best
    d = image.shape[1]
    return Keeper(
        w_image=(coef[:d] * image_scale).tolist(),
        w_facts=(coef[d:] / s_fact).tolist(),
        groups=n_groups,
        pairs=len(winners),
        C=C,
    )


def keepers(group: np.ndarray, utility: np.ndarray | None, score: np.ndarray) -> np.ndarray:
    """The keeper's row of each row's group (-1 for a row in no group): the highest utility, or
    without a keeper model the lowest deletion score; ties go to the first row."""
    out = np.full(len(group), -1, dtype=np.int64)
    for g in np.unique(group[group >= 0]):
        rows = np.flatnonzero(group == g)
        best = rows[np.argmax(utility[rows])] if utility is not None else rows[np.argmin(score[rows])]
        out[rows] = best
    return out
