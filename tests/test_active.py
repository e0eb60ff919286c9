"""imgrank.learn.active.choose: the cold-start page stands for the folder's kinds (not its odd one-offs),
the prior tilts it towards the less wanted, pages never repeat a labelled shot, and with a head the
page is spread over what the head sees."""

from __future__ import annotations

import numpy as np

from imgrank.learn.active import choose


def folder(rng, kinds: int = 6, per_kind: int = 50, odd: int = 6, dim: int = 32):
    """Tight kinds of photos plus a few odd one-offs; returns (vectors, kind of each, -1 for odd)."""
    centres = rng.normal(size=(kinds, dim))
    x = np.concatenate(
        [
            np.repeat(centres, per_kind, axis=0) + 0.25 * rng.normal(size=(kinds * per_kind, dim)),
            rng.normal(size=(odd, dim)) * 1.5,
        ]
    )
    kind = np.concatenate([np.repeat(np.arange(kinds), per_kind), -np.ones(odd, int)])
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), kind


def test_without_a_head_the_page_is_one_photo_per_kind_and_no_odd_ones():
    vectors, kind = folder(np.random.default_rng(1))
    page = choose(vectors, None, 6, rule="badge")
    assert [why for _, why in page] == ["representative"] * 6
    assert sorted(kind[[i for i, _ in page]]) == list(range(6))


def test_without_a_head_the_prior_picks_the_less_wanted_near_each_centre():
    vectors, kind = folder(np.random.default_rng(2))
    prior = np.random.default_rng(3).random(len(vectors))
    plain = [i for i, _ in choose(vectors, None, 6, rule="badge")]
    tilted = [i for i, _ in choose(vectors, None, 6, prior=prior, rule="badge")]
    assert sorted(kind[tilted]) == list(range(6))
    assert prior[tilted].sum() > prior[plain].sum()


def test_a_near_duplicate_of_a_labelled_photo_is_not_offered():
    rng = np.random.default_rng(4)
    vectors, kind = folder(rng)
    p = np.full(len(vectors), 0.05)
    p[:10] = 0.5  # the ten most uncertain are shots of one scene...
    vectors[:10] = vectors[0] + 0.01 * rng.normal(size=(10, vectors.shape[1]))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    labelled = vectors[:1] + 0.01 * rng.normal(size=(1, vectors.shape[1]))  # ...one of which is labelled
    page = [i for i, _ in choose(vectors, p, 5, labelled=labelled, rule="badge")]
    assert len(page) == 5 and not set(page) & set(range(10))


def test_with_a_head_the_page_spreads_over_what_the_head_sees():
    """Photos the image vectors cannot tell apart (one scene), which the head tells apart by the rest
    of its input (a file name, a size): 190 of one sort and 5 each of two others, all equally
    doubted. Spread in the head's view, the page takes each sort, the small ones too; with the image
    vectors alone it is a draw from the 190."""
    rng = np.random.default_rng(5)
    vectors = np.eye(32)[0] + 0.02 * rng.normal(size=(200, 32))
    sort = np.repeat([0, 1, 2], [190, 5, 5])
    seen = np.concatenate([vectors, 3.0 * np.eye(3)[sort]], axis=1)  # what the head sees
    p = np.full(200, 0.5)

    def view(rows):
        return seen[rows]

    covered = {"view": 0, "image": 0}
    for seed in range(5):
        with_view = [i for i, _ in choose(vectors, p, 6, view=view, seed=seed, rule="badge")]
        image_only = [i for i, _ in choose(vectors, p, 6, seed=seed, rule="badge")]
        covered["view"] += set(sort[with_view]) == {0, 1, 2}
        covered["image"] += set(sort[image_only]) == {0, 1, 2}
    assert covered == {"view": 5, "image": covered["image"]} and covered["image"] <= 1, covered


def test_by_default_the_page_is_a_random_draw_without_near_duplicates_of_labelled_photos():
    """No queue beat labelling at random on the benchmarks, so the default page is a uniform draw:
    not the head's doubted photos, not one per kind; only shots of a labelled scene are left out."""
    rng = np.random.default_rng(7)
    vectors, kind = folder(rng, kinds=6, per_kind=50, odd=0)
    p = np.full(len(vectors), 0.02)
    p[:50] = 0.5  # the head doubts one kind only
    labelled = vectors[50:51] + 0.001 * rng.normal(size=(1, vectors.shape[1]))
    near = np.flatnonzero(vectors @ (labelled[0] / np.linalg.norm(labelled[0])) >= 0.95)
    pages = [choose(vectors, p, 60, labelled=labelled, seed=s) for s in range(5)]
    for page in pages:
        assert {why for _, why in page} == {"random"} and len(page) == 60
        picked = [i for i, _ in page]
        assert not set(picked) & set(near)
        assert len(set(kind[picked])) == 6 and np.mean(p[picked] == 0.5) < 0.4  # not the doubted kind
    assert len({tuple(i for i, _ in page) for page in pages}) == 5  # a draw, not a fixed list
