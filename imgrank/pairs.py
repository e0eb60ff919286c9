"""RAW+JPEG pairs: a camera that writes `IMG_0042.CR2` and `IMG_0042.JPG` took one photo.

Files in one folder with the same stem, at least one of them a RAW (imgrank.raw.RAW_EXTENSIONS) and
at least one not, are one photo to their owner: one place in the order (both get its time), one
label, one score. The photo is led by its JPEG (its vector, its score); by the RAW's preview when
the JPEG has no score (yet). No table: a pair is a fact about names, read from paths.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable

from imgrank.files import is_image_name
from imgrank.raw import is_raw_name


def _key(path: str) -> tuple[str, str]:
    folder, name = os.path.split(path)
    return folder, os.path.splitext(name)[0]


def groups(paths: Iterable[str]) -> list[list[str]]:
    """The pairs among these paths: each a list of two or more paths (RAW and not), sorted."""
    by_key: dict[tuple[str, str], list[str]] = {}
    for p in paths:
        by_key.setdefault(_key(p), []).append(p)
    return [
        sorted(members)
        for members in by_key.values()
        if len(members) > 1 and any(map(is_raw_name, members)) and not all(map(is_raw_name, members))
    ]


def leads(paths: Iterable[str], scored: Callable[[str], bool] = lambda p: True) -> dict[str, list[str]]:
    """{lead: its partners} for each pair: the lead is a scored non-RAW member (the JPEG), else a scored
    RAW; a pair with no scored member has no lead."""
    out = {}
    for members in groups(paths):
        candidates = [p for p in members if scored(p)]
        if not candidates:
            continue
        lead = min(candidates, key=lambda p: (is_raw_name(p), p))
        out[lead] = [p for p in members if p != lead]
    return out


def members(path: str) -> list[str]:
    """The files on disk that are one photo with `path` (itself first), or [path] if it is not in a
    pair: for commands that act on a photo as its owner sees it (relabel, trash)."""
    folder, stem = _key(path)
    try:
        with os.scandir(folder or ".") as it:
            names = [
                e.name
                for e in it
                if os.path.splitext(e.name)[0] == stem
                and is_image_name(e.name)
                and e.is_file(follow_symlinks=False)
            ]
    except OSError:
        return [path]
    others = [os.path.join(folder, n) for n in sorted(names) if os.path.join(folder, n) != path]
    if not groups([path, *others]):
        return [path]
    return [path, *others]


def count(paths: Iterable[str]) -> int:
    """How many RAW+JPEG pairs are among these paths."""
    return len(groups(paths))
