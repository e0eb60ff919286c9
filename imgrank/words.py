"""Counts in plain words for people: only what happened, with the right plural ("1 photo", "3 new
photos, 470 unchanged"), as restic and llm print them. Machines read `--json`, which keeps every key.
"""

from __future__ import annotations

import re
from collections.abc import Iterable


def plural(n: int, noun: str, nouns: str | None = None) -> str:
    """`1 photo`, `2 photos` (`nouns` for an irregular plural)."""
    return f"{n} {_noun(n, noun, nouns)}"


def _noun(n: int, noun: str, nouns: str | None = None) -> str:
    return noun if n == 1 else nouns or noun + "s"


def counts(
    items: Iterable[tuple[int, str]], noun: str | None = "photo", nouns: str | None = None, verb: bool = False
) -> str:
    """The non-zero (count, word) pairs; the first carries the noun, pluralised by its count:
    [(3, "new"), (0, "moved"), (470, "unchanged")] -> "3 new photos, 470 unchanged"; with `verb`
    the noun comes first: [(1, "indexed"), (2, "moved")] -> "1 photo indexed, 2 moved"."""
    shown = [(n, word) for n, word in items if n]
    parts = [f"{n} {word}" for n, word in shown]
    if parts and noun:
        n, word = shown[0]
        parts[0] = f"{plural(n, noun, nouns)} {word}" if verb else f"{n} {word} {_noun(n, noun, nouns)}"
    return ", ".join(parts)


def names(paths: list[str], most: int = 3) -> str:
    """A few paths by name, and how many more: `a.jpg, b.jpg, c.jpg and 37 more`."""
    shown = ", ".join(paths[:most])
    return shown if len(paths) <= most else f"{shown} and {len(paths) - most} more"


def scan_summary(d: dict) -> str:
    """One line for a scan's result (`imgrank scan`, the daemon's catch-up)."""
    seen = counts(
        [(d.get(k, 0), k) for k in ("new", "changed", "moved", "missing", "unreadable", "unchanged")]
    )
    done = counts([(d.get(k, 0), k) for k in ("embedded", "scored", "ordered")], noun=None)
    text = "; ".join(p for p in (seen, done) if p) or "no photos found"
    return f"{text} ({d.get('seconds', 0):.1f} s)"


# What a terminal would act on rather than show: C0 and C1 controls (ESC starts an escape sequence,
# a carriage return hides what came before it) and the bidirectional overrides that reorder text.
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def printable(text: str) -> str:
    """`text` safe to print on a terminal: each control character as `\\xNN` or `\\uNNNN`."""

    def escaped(m: re.Match) -> str:
        o = ord(m.group())
        return f"\\x{o:02x}" if o < 0x100 else f"\\u{o:04x}"

    return _UNPRINTABLE.sub(escaped, text)
