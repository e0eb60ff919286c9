"""WHERE clauses the store's modules share."""

from __future__ import annotations

from imgrank.files import db_path, db_prefix


def at_or_under(column: str, path: str) -> tuple[str, list]:
    """The condition (and its parameters) for rows whose `column` holds `path` or a path inside it.

    Compared by substr, not LIKE, which would ignore ASCII case (files.db_prefix)."""
    prefix = db_prefix(path)
    return f"{column} = ? OR substr({column}, 1, ?) = ?", [db_path(path), len(prefix), prefix]
