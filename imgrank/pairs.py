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


def _key(path: str) -> str:
    """The path without its extension: folder and stem, what the files of one photo share."""
    stem, dot, ext = path.rpartition(".")
    return stem if dot and os.sep not in ext else path


def groups(paths: Iterable[str]) -> list[list[str]]:
    """The pairs among these paths: each a list of two or more paths (RAW and not), sorted."""
    paths = list(paths)
    raw_keys = {_key(p) for p in paths if is_raw_name(p)}
    if not raw_keys:  # the common case, and a pass over 100,000 paths must stay cheap
        return []
    by_key: dict[str, list[str]] = {}
    for p in paths:
        if (k := _key(p)) in raw_keys:
            by_key.setdefault(k, []).append(p)
    return [
        sorted(members)
        for members in by_key.values()
        if len(members) > 1 and not all(map(is_raw_name, members))
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
    folder, name = os.path.split(path)
    stem = os.path.splitext(name)[0]
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
