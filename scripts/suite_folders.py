"""Folders for bench_suite.py: synthetic libraries built like real ones, and owners of several tastes.

A folder, in the real feature width (256-d image vector + 256-d file-name vector + 3 cheap facts):
- kinds of photo with Zipf shares (a few kinds hold most photos), three of them screen kinds
  (screenshots, documents, memes);
- events (a day out: one kind, one source) holding single shots and bursts of near-duplicates
  (pairwise cosine about 0.98), whose shots differ a little in quality;
- a low-variance quality direction in the image vectors (sharpness, exposure: it moves a vector far
  less than a change of kind does);
- names by source: camera (IMG_1234.JPG), screenshot (Screenshot_2024-...png) and messenger
  (IMG-20240101-WA0001.jpg) families, each with its own pixel count, shape and file size.
An owner's taste turns a photo's facts into a score z; the top share is "delete" (y_true), and 5% of
the labels the owner gives are flipped (y_given). Held-out photos come from events no label saw.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

IMAGE_DIM, NAME_DIM = 256, 256
BLOCKS = (IMAGE_DIM, NAME_DIM)  # the leading feature blocks (then the cheap facts)
CAMERA, SCREENSHOT, MESSENGER = 0, 1, 2
FLIP = 0.05


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


@dataclass
class Folder:
    """Photos: features, what they are (kind, source, quality, event, burst), and their labels."""

    x: np.ndarray  # N x 515
    image: np.ndarray
    kind: np.ndarray
    screen: np.ndarray  # a screen kind (screenshots, documents, memes)
    source: np.ndarray  # CAMERA, SCREENSHOT, MESSENGER
    quality: np.ndarray
    event: np.ndarray
    burst: np.ndarray  # burst id (a single shot is a burst of one)
    y_true: np.ndarray | None = None
    y_given: np.ndarray | None = None

    def rows(self, keep: np.ndarray) -> Folder:
        return Folder(*(None if v is None else v[keep] for v in self.__dict__.values()))


def build(n: int, rng: np.random.Generator, sources: bool = True, n_kinds: int = 25) -> Folder:
    """A library of about n photos (see the module's docstring). `sources`: False makes every photo a
    camera photo (names and cheap facts then say nothing about taste)."""
    share = 1 / np.arange(1, n_kinds + 1) ** 1.1
    share /= share.sum()
    kinds = rng.normal(size=(n_kinds, IMAGE_DIM))
    common = 0.8 * rng.normal(size=IMAGE_DIM)
    quality_dir = unit(rng.normal(size=IMAGE_DIM))
    screen_kinds = rng.choice(np.arange(3, n_kinds), 3, replace=False)  # not the biggest kinds
    names = rng.normal(size=(3, NAME_DIM))
    rows: dict[str, list] = {
        k: [] for k in ("image", "name", "meta", "kind", "source", "q", "event", "burst")
    }
    event = burst = 0
    while len(rows["image"]) < n:
        event += 1
        k = int(rng.choice(n_kinds, p=share))
        screen = k in screen_kinds
        source = CAMERA
        if sources:
            source = int(rng.choice(3, p=[0.0, 0.8, 0.2] if screen else [0.85, 0.0, 0.15]))
        centre = common + kinds[k] + 0.6 * rng.normal(size=IMAGE_DIM)
        for _ in range(int(rng.geometric(1 / 6))):
            burst += 1
            shots = 1 if rng.random() < 0.6 else int(rng.integers(2, 9))
            shot = centre + 0.5 * rng.normal(size=IMAGE_DIM)
            q_shot = rng.normal()
            for _ in range(shots):
                q = q_shot + 0.6 * rng.normal() if shots > 1 else q_shot
                rows["image"].append(shot + 0.12 * rng.normal(size=IMAGE_DIM) + 1.2 * q * quality_dir)
                rows["name"].append(names[source] + 0.5 * rng.normal(size=NAME_DIM))
                rows["meta"].append(_facts(source, q, rng))
                for key, v in (("kind", k), ("source", source), ("q", q), ("event", event), ("burst", burst)):
                    rows[key].append(v)
    image = unit(np.array(rows["image"][:n]))
    x = np.concatenate([image, unit(np.array(rows["name"][:n])), np.array(rows["meta"][:n], np.float32)], 1)
    kind = np.array(rows["kind"][:n])
    return Folder(
        x,
        image,
        kind,
        np.isin(kind, screen_kinds),
        np.array(rows["source"][:n]),
        np.array(rows["q"][:n]),
        np.array(rows["event"][:n]),
        np.array(rows["burst"][:n]),
    )


def _facts(source: int, q: float, rng: np.random.Generator) -> list[float]:
    """log pixel count, log aspect ratio, log file size of one photo from this source."""
    if source == SCREENSHOT:
        return [np.log(1170 * 2532), np.log(1170 / 2532), np.log(4e5) + 0.3 * rng.normal()]
    if source == MESSENGER:
        return [np.log(1600 * 1200), np.log(4 / 3) * rng.choice([1, -1]), np.log(2e5) + 0.3 * rng.normal()]
    px = np.log(12e6) + 0.1 * rng.normal()
    return [px, np.log(4 / 3) * rng.choice([1, -1]), px - 1.2 + 0.1 * q + 0.2 * rng.normal()]


def _top(z: np.ndarray, rate: float) -> np.ndarray:
    return (z > np.quantile(z, 1 - rate)).astype(int)


def _kind_bias(f: Folder, rng: np.random.Generator) -> np.ndarray:
    """Per photo: how much its owner dislikes its kind (screen kinds most)."""
    bias = rng.normal(-1.0, 0.8, f.kind.max() + 1)
    return np.where(f.screen, 2.0, bias[f.kind])


def taste_kinds(f: Folder, rng) -> np.ndarray:
    """Deletes whole kinds: screenshots, documents, memes, and some kinds more than others."""
    return _top(_kind_bias(f, rng) + rng.logistic(scale=0.3, size=len(f.kind)), 0.2)


def taste_quality(f: Folder, rng) -> np.ndarray:
    """Deletes the worst-quality photos of every kind."""
    return _top(-f.quality + rng.logistic(scale=0.3, size=len(f.kind)), 0.2)


def taste_mixed(f: Folder, rng, rate: float = 0.2) -> np.ndarray:
    """A bit of both: some kinds, and bad photos of any kind."""
    bias = _kind_bias(f, rng)
    z = bias / bias.std() - f.quality + rng.logistic(scale=0.3, size=len(f.kind))
    return _top(z, rate)


def taste_name(f: Folder, rng) -> np.ndarray:
    """Deletes what messengers saved (the file name says it), then the worst of the rest."""
    z = 3.0 * (f.source == MESSENGER) - 0.3 * f.quality + rng.logistic(scale=0.3, size=len(f.kind))
    return _top(z, 0.2)


def taste_burst(f: Folder, rng) -> np.ndarray:
    """Relative within a burst: keeps its best shot, deletes the rest; keeps every single shot."""
    order = np.lexsort((-f.quality, f.burst))
    first = np.r_[True, f.burst[order][1:] != f.burst[order][:-1]]
    y = np.ones(len(f.kind), int)
    y[order[first]] = 0
    return y


@dataclass
class Generator:
    name: str
    about: str
    taste: Callable[[Folder, np.random.Generator], np.ndarray]
    sources: bool = True  # False: every photo a camera photo (image-only deletes)
    rare: bool = False  # the delete share drawn per seed from 1:4 to 1:20


GENERATORS = {
    g.name: g
    for g in (
        Generator("kinds", "deletes whole kinds (screenshots, memes, documents)", taste_kinds),
        Generator("quality", "deletes the worst-quality photos of every kind", taste_quality),
        Generator("mixed", "a bit of both kinds and quality", taste_mixed),
        Generator("name", "deletes messenger saves (by file name) and the worst of the rest", taste_name),
        Generator(
            "image",
            "kinds and quality, every photo a camera photo (names say nothing)",
            taste_mixed,
            sources=False,
        ),
        Generator("burst", "keeps the best shot of each burst, deletes the rest", taste_burst),
        Generator("rare", "kinds and quality, 1 delete per 4 to 20 keeps", taste_mixed, rare=True),
    )
}


def make(generator: str, seed: int, n_pool: int, n_test: int) -> tuple[Folder, Folder, float]:
    """(labelling pool, held-out photos from events the pool never saw, delete share) for one seed."""
    g = GENERATORS[generator]
    rng = np.random.default_rng([seed, sorted(GENERATORS).index(generator)])
    f = build(n_pool + n_test, rng, sources=g.sources)
    if g.rare:
        rate = 1 / (1 + rng.uniform(4, 20))
        f.y_true = taste_mixed(f, rng, rate)
    else:
        f.y_true = g.taste(f, rng)
    f.y_given = f.y_true ^ (rng.random(len(f.y_true)) < FLIP)
    events = np.unique(f.event)
    test_events = rng.choice(events, int(round(len(events) * n_test / (n_pool + n_test))), replace=False)
    held = np.isin(f.event, test_events)
    return f.rows(~held), f.rows(held), float(f.y_true.mean())
