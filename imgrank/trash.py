"""Act on the ranking: move photos to the desktop Trash, and put the last batch back.

Photos go through send2trash (the freedesktop trash on Linux: `~/.local/share/Trash`, or a
`.Trash-UID` folder at the top of another disk; the platform's own elsewhere), never `os.unlink`.
Each move is logged in the `trash` table (store/trash.py) before the next one starts: the
batch, the photo's path, its content, and where in the Trash it went. `undo` moves the last batch
back from there and removes their `.trashinfo` entries. Labels stay as they are either way; a
photo moved here without a `delete` label gets one (source `deleted`, as when the owner deletes in
a viewer), and the daemon, which sees the move as a deletion, labels nothing again (`trashed`).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote_to_bytes

from imgrank import index, pairs
from imgrank.errors import ImgrankError
from imgrank.files import display_name
from imgrank.ranking import ranked
from imgrank.store import labels
from imgrank.store import trash as moves


@dataclass
class Batch:
    """What one `trash` (or `trash --undo`) did: the paths moved, and those it could not move, why."""

    batch: int | None = None
    moved: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    dry_run: bool = False


def chosen(db, top: int | None = None, labelled: str | None = None, paths: tuple[str, ...] = ()) -> list[str]:
    """The photos one `trash` is about: the N least-wanted (`top`), every present photo whose
    content is labelled `labelled`, or these paths (files; each checked when it is moved)."""
    if sum(x is not None and x != () for x in (top, labelled, paths)) != 1:
        raise ImgrankError("say which photos: --top N, --labelled delete, or PATH...")
    if top is not None:
        return with_pairs(r.path for r in ranked(db, top))
    if labelled is not None:
        current = labels.current_labels(db)
        return with_pairs(sorted(p for p, sha in index.present_files(db) if current.get(sha) == labelled))
    return with_pairs(os.path.abspath(os.path.expanduser(p)) for p in paths)


def with_pairs(paths) -> list[str]:
    """Each path followed by the other files of its photo (a RAW+JPEG pair is one photo), once each."""
    out: dict[str, None] = {}
    for path in paths:
        out.update(dict.fromkeys(pairs.members(path)))
    return list(out)


def move(db, paths: list[str], dry_run: bool = False) -> Batch:
    """Move each path to the Trash, logging each move; labels a photo without one `delete`."""
    from send2trash import send2trash

    out = Batch(dry_run=dry_run)
    known = index.rows(db, paths)
    for path in paths:
        if not os.path.isfile(path) or os.path.islink(path):
            out.failed.append((path, "not a file (a folder, a link, or gone)"))
            continue
        if dry_run:
            out.moved.append(path)
            continue
        if out.batch is None:
            out.batch = (moves.last_batch(db) or 0) + 1
        since = time.time()
        try:
            send2trash(path)
        except OSError as e:
            out.failed.append((path, e.strerror or str(e)))
            continue
        row = known.get(path)
        sha = row.sha256 if row else None
        where = _found_in_trash(path, since)
        with db.atomic():
            moves.log(db, out.batch, path, sha, *where)
            if sha:
                index.mark_missing(db, path)
                if labels.current_label(db, sha) != "delete":
                    labels.set_label(db, sha, "delete", "deleted", path)
        out.moved.append(path)
    return out


def undo(db) -> Batch:
    """Move the photos of the last batch not yet undone back where they were."""
    last = moves.last_open_batch(db)
    if last is None:
        raise ImgrankError("nothing to undo: no photos were moved to the Trash by imgrank")
    out = Batch(batch=last)
    for rid, path, trashed, info in moves.open_moves(db, last):
        if trashed is None:
            out.failed.append((path, "where it went in the Trash is not known: restore it from your Trash"))
            continue
        if os.path.lexists(path):
            out.failed.append((path, "something is there now: left in the Trash"))
            continue
        try:
            os.rename(trashed, path)
        except OSError as e:
            out.failed.append((path, f"cannot move it back from the Trash: {e.strerror or e}"))
            continue
        try:
            os.unlink(info)  # the Trash's record of it, not the photo
        except OSError:
            pass
        moves.undone(db, rid)
        out.moved.append(path)
    return out


def trashed(db, paths: list[str], within: float = 3600.0) -> set[str]:
    """Of these paths, those imgrank moved to the Trash in the last `within` seconds and did not
    put back: deletions the daemon sees that imgrank made itself."""
    if not paths:
        return set()
    return moves.moved_since(db, paths, time.time() - within)


def _found_in_trash(path: str, since: float) -> tuple[str | None, str | None]:
    """Where send2trash put `path`: (the file in the Trash, its .trashinfo), found by the original
    path the .trashinfo records; (None, None) where that is not the freedesktop trash."""
    for top, trash in _trash_dirs(path):
        info_dir = trash / "info"
        try:
            entries = sorted(info_dir.iterdir(), key=lambda p: p.stat().st_mtime, reverse=True)
        except OSError:
            continue
        for info in entries:
            try:
                if info.stat().st_mtime < since - 2 or info.suffix != ".trashinfo":
                    continue
                recorded = _recorded_path(info, top)
            except OSError:
                continue
            if recorded == os.path.abspath(path):
                name = info.name[: -len(".trashinfo")]
                return str(trash / "files" / name), str(info)
    return None, None


def _trash_dirs(path: str) -> list[tuple[Path, Path]]:
    """(top directory, trash directory) pairs where the freedesktop spec puts a trashed `path`."""
    data_home = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    out = [(data_home, data_home / "Trash")]
    mount = Path(os.path.realpath(path)).parent
    while not os.path.ismount(mount) and mount != mount.parent:
        mount = mount.parent
    uid = str(os.getuid())
    out += [(mount, mount / ".Trash" / uid), (mount, mount / f".Trash-{uid}")]
    return out


def _recorded_path(info: Path, top: Path) -> str | None:
    for line in info.read_bytes().splitlines():
        if line.startswith(b"Path="):
            recorded = os.fsdecode(unquote_to_bytes(line[5:].strip()))
            return os.path.abspath(os.path.join(top, recorded))
    return None


def summary(result: Batch) -> str:
    """One line: how many photos went (or would go) to the Trash, or came back."""
    n = len(result.moved)
    verb = "would move" if result.dry_run else "moved"
    return f"{verb} {n} photo{'s' * (n != 1)} to the Trash" + (
        f" (batch {result.batch}: `imgrank trash --undo` puts them back)" if result.batch and n else ""
    )


def failures(result: Batch) -> list[str]:
    return [f"{display_name(p)}: {why}" for p, why in result.failed]
