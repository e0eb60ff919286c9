"""`imgrank report`: the review page's metrics and the first 50 of each queue, as one self-contained
HTML file (thumbnails inlined as data: URIs, plots as inline SVG, no scripts, nothing fetched).

Every value from the store or a head is escaped, and the file carries a Content-Security-Policy that
allows no script at all, images only from data: URIs and only its own style block."""

from __future__ import annotations

import base64
import hashlib
import html
import time
from pathlib import Path

from imgrank.errors import ImgrankError, UnreadableImage
from imgrank.private import write_private
from imgrank.review import metrics, queues
from imgrank.thumbs import thumbnail

PER_QUEUE = 50
TITLES = {
    "least-wanted": "Least wanted (unlabelled)",
    "suspects": "Suspects: labels the model doubts",
    "informative": "Most informative to label next",
    "bursts": "Bursts and copies (keeper first)",
}
STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1em 2em; color: #222; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(150px, 1fr)); gap: 8px; }
.tile { border: 1px solid #ddd; border-radius: 4px; padding: 3px; font-size: 12px; }
.tile img { width: 100%; height: 120px; object-fit: cover; display: block; background: #eee; }
.tile .name { overflow: hidden; text-overflow: ellipsis; white-space: nowrap; color: #555; }
.keep { color: #2b8a3e; font-weight: bold; } .delete { color: #c92a2a; font-weight: bold; }
.metrics { display: flex; flex-wrap: wrap; gap: 1.5em; }
.metrics figure { margin: 0; } .metrics table { border-collapse: collapse; margin-bottom: 1em; }
.metrics td, .metrics th { border: 1px solid #ccc; padding: .3em .8em; text-align: right; }
.legend .ap { color: #1864ab; } .legend .auc { color: #e67700; }
"""
STYLE_HASH = base64.b64encode(hashlib.sha256(STYLE.encode()).digest()).decode()
CSP = (
    f"default-src 'none'; img-src data:; style-src 'sha256-{STYLE_HASH}'; base-uri 'none'; form-action 'none'"
)


def _thumb_uri(sha256: str, path: str) -> str:

    try:
        data = thumbnail(sha256, path).read_bytes()
    except (UnreadableImage, OSError):
        return ""
    return "data:image/jpeg;base64," + base64.b64encode(data).decode("ascii")


def _tile(item: dict) -> str:
    uri = _thumb_uri(item["sha256"], item["_path"])
    label = item.get("label") if item.get("label") in ("keep", "delete") else None
    mark = f' <span class="{label}">{label}</span>' if label else ""
    keeper = " · keeper, as you choose" if item.get("keeper_by") == "learned" else " · keeper"
    extra = keeper if item.get("keeper") else (f" · group {int(item['group'])}" if item.get("group") else "")
    return (
        f'<div class="tile"><img alt="{html.escape(item["name"])}" src="{uri}">'
        f'<div class="name" title="{html.escape(item["path"])}">{html.escape(item["name"])}</div>'
        f"<div>{float(item['score']):.3f}{mark}{extra}</div></div>"
    )


def build(db) -> str:
    """The report as an HTML string."""

    sections = []
    for name in queues.QUEUES:
        items = queues.queue(db, name, PER_QUEUE)[:PER_QUEUE]
        body = "".join(_tile(i) for i in items) or "<p>Nothing in this queue.</p>"
        sections.append(f'<h2>{TITLES[name]}</h2><div class="grid">{body}</div>')
    when = time.strftime("%Y-%m-%d %H:%M")
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}"><title>imgrank report</title>'
        f"<style>{STYLE}</style></head><body><h1>imgrank report, {when}</h1>"
        f"<h2>Metrics</h2>{metrics.render(metrics.gather(db))}{''.join(sections)}</body></html>"
    )


def write_report(db, out: str | Path) -> dict:
    """Write the report file; returns its path and size."""
    out = Path(out)
    if out.is_dir():
        raise ImgrankError(f"{out} is a folder: give a file name, e.g. {out / 'report.html'}")
    text = build(db)
    try:
        write_private(out, text)  # 0600: thumbnails and paths of private photos
    except OSError as e:
        raise ImgrankError(f"cannot write {out}: {e.strerror}") from None
    return {"path": str(out.resolve()), "bytes": len(text.encode())}
