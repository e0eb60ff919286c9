"""What `order` and `restore` report (order.py fills them; cli_text.py and --json print them)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


def _as_dict(result) -> dict:
    """A result as JSON: its fields in order, failures as {path, reason}, seconds rounded."""
    d = asdict(result)
    d["failed"] = [{"path": p, "reason": r} for p, r in result.failed]
    if "skipped" in d:
        d["skipped"] = [{"path": p, "reason": r} for p, r in result.skipped]
    if "missing" in d:
        d["missing"] = list(result.missing)
    d["seconds"] = round(result.seconds, 3)
    return d


@dataclass
class OrderResult:
    ordered: int = 0  # files in the order
    touched: int = 0  # files whose mtime changed
    in_place: int = 0  # files already at their time
    restored: int = 0  # files no longer in the order, given their own time back
    failed: list[tuple[str, str]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # deleted, or edited meanwhile: no failure
    warnings: list[str] = field(default_factory=list)
    dry_run: bool = False
    plan: list[dict] = field(default_factory=list)  # filled by a dry run
    seconds: float = 0.0

    as_dict = _as_dict


@dataclass
class RestoreResult:
    restored: int = 0  # mtimes put back
    already: int = 0  # records whose file already had its original time
    followed: int = 0  # files found moved (by content and imgrank time): restored where they are now
    missing: list[str] = field(default_factory=list)  # not there: records kept for when they come back
    gone: list[str] = field(default_factory=list)  # another file was moved onto them: records set apart
    forgotten: int = 0  # missing files whose records were dropped (--forget-missing)
    failed: list[tuple[str, str]] = field(default_factory=list)  # left alone, record kept
    seconds: float = 0.0

    as_dict = _as_dict
