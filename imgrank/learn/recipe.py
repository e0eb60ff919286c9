"""TrainConfig: every knob of a training run (the recipe's choices and their bounds), with its
defaults. Its own module so that the learning modules (mlp, validation, suspects) read it without
importing train.py, which imports them."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from imgrank.learn.contrast import CENTROIDS
from imgrank.learn.evaluation import MAX_GROUP, NEAR_DUP

# The prior's features a head is offered (prior.head_features computes them).
HEAD_FEATURES = ("prior_logit", "log_sharpness", "clipped_dark", "clipped_bright", "mean_grey")
# How much higher the held-out AP must be with them: five columns of pure noise, offered to 2,000 labels,
# once came out 0.001 ahead, which says nothing.
HELPS_BY = 0.01


@dataclass
class TrainConfig:
    """Every knob of a training run, with its default. The head stores it, so a run can be repeated."""

    hidden: tuple[int, ...] = (256,)  # hidden layer widths of the MLP; () is logistic regression
    dropout: float = 0.2
    lr: float = 1e-3  # AdamW
    weight_decay: float = 1e-2
    batch_size: int = 256
    max_epochs: int = 100
    patience: int = 5  # epochs without a better held-out AP before a fold stops...
    patience_steps: int = 100  # ...and at least this many minibatch steps (small data: more epochs)
    cv: int = 5  # folds that choose the recipe and give the held-out metrics (fewer with few deletes)
    # From this many labels on, 2 folds: each still learns from thousands of photos, and the whole
    # recipe costs about a quarter (25,000 labels: 9 s instead of 41 s on two cores).
    two_folds_from: int = 5000
    l2_choices: tuple[float, ...] = (0.1, 1.0, 10.0, 100.0, 1000.0, 10000.0)  # the regressions' L2 strengths
    near_dup: float = NEAR_DUP  # cosine similarity from which two photos can be the same shot
    max_group: int = MAX_GROUP  # most photos in one near-duplicate group
    # The MLP is cross-validated only from this many labels and deletes (`validation.mlp_offered`).
    mlp_from: int = 2000
    mlp_min_deletes: int = 200
    use_name: bool = True  # file-name embedding as features
    use_meta: bool = True  # log pixel count, aspect ratio, file size
    use_prior: bool = True  # offer the prior's features; kept only if they raise the held-out AP
    # True: each block of features (image vector, name vector, the cheap facts) gets the same share of
    # the L2 prior and the embeddings' prior follows the folder's photos (`input_space`). Off: every
    # column standardised alike. On bench_suite's seven folders the shaped prior fell 0.1-0.25 of AP
    # behind the scikit-learn pipeline on some (a quality direction the folder's photos hardly vary
    # along; rare deletes), where the plain space kept up with it (docs/learning.md).
    balance_blocks: bool = False
    # k-means clusters of the folder's photos for the features of how a photo differs from the photos
    # like it (`contrast`); 0: none.
    contrast: int = CENTROIDS
    # More prior, in that block, along the directions the folder's near-duplicates differ along
    # (`directions.differences`); False: none.
    differ: bool = True
    check_splits: int = 5  # fold splits averaged for `suspects` (fewer from 500 labels on: see label_check)
    min_per_class: int = 10
    worse_margin: float = 0.02  # a new head whose AP is this much below the active one's is not activated
    force: bool = False  # activate anyway
    device: str = "cpu"
    threads: int | None = None
    seed: int = 0

    def to_dict(self) -> dict:
        d = asdict(self)
        d["hidden"] = list(self.hidden)
        d["l2_choices"] = list(self.l2_choices)
        return d
