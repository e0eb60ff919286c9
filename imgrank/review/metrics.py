"""The metrics tab (and report): runs over time, PR curve and score histograms by label, confusion
matrix, label counts. Plots are inline SVG written here: no CDN, no JavaScript library."""

from __future__ import annotations

import datetime
import html
import json
import math

import numpy as np

from imgrank.store.labels import label_counts

W, H, PAD = 420, 240, 36
COLOURS = {"keep": "#2b8a3e", "delete": "#c92a2a", "ap": "#1864ab", "auc": "#e67700"}


def number(v) -> float | None:
    """v if it is a finite number, else None: what a run recorded before heads were checked may hold."""
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    return float(v) if ok else None


def _count(v) -> str:
    """A count as text: digits only, whatever the stored value was."""
    return str(v) if isinstance(v, int) and not isinstance(v, bool) else "?"


def gather(db) -> dict:
    """Everything the metrics tab shows, as plain data."""
    from imgrank.ranking import scored_photos  # lazy: sqlite_utils
    from imgrank.runs import headline, list_runs  # lazy: sqlite_utils
    from imgrank.store.scores import active_run, score_source  # lazy: sqlite_utils

    runs = sorted(list_runs(db), key=lambda r: r["id"])
    active = active_run(db)
    labelled = {r.sha256: r for r in scored_photos(db) if r.label is not None}
    y = np.array([r.label == "delete" for r in labelled.values()], int)
    p = np.array([r.score for r in labelled.values()], float)
    metrics = json.loads(active["metrics"] or "{}") if active else {}
    return {
        "source": score_source(db),
        "runs": [
            {
                "id": r["id"],
                "at": r["started_at"],
                "ap": number(r["val_ap"]),
                "auc": number(r["val_auc"]),
                "active": r["active"],
            }
            for r in runs
        ],
        "active_run": active["id"] if active else None,
        "confusion": (headline(metrics) if isinstance(metrics, dict) else {}).get("confusion"),
        "labels": label_counts(db),
        "y": y.tolist(),
        "p": p.tolist(),
    }


def _frame(title: str, body: str, x_label: str, y_label: str) -> str:
    return (
        f"<figure><figcaption>{html.escape(title)}</figcaption>"
        f'<svg viewBox="0 0 {W} {H}" width="{W}" height="{H}" role="img" aria-label="{html.escape(title)}">'
        f'<rect x="{PAD}" y="8" width="{W - PAD - 8}" height="{H - PAD - 8}" fill="none" stroke="#999"/>'
        f'<text x="{W / 2}" y="{H - 6}" text-anchor="middle" font-size="11">{html.escape(x_label)}</text>'
        f'<text x="10" y="{H / 2}" text-anchor="middle" font-size="11" transform="rotate(-90 10 {H / 2})">'
        f"{html.escape(y_label)}</text>{body}</svg></figure>"
    )


def _xy(x: float, y: float) -> tuple[float, float]:
    """Unit square -> plot area."""
    return PAD + x * (W - PAD - 8), 8 + (1 - y) * (H - PAD - 8)


def _polyline(points, colour: str) -> str:
    pts = " ".join(f"{a:.1f},{b:.1f}" for a, b in (_xy(x, y) for x, y in points))
    return f'<polyline points="{pts}" fill="none" stroke="{colour}" stroke-width="2"/>'


def _ticks() -> str:
    out = []
    for v in (0, 0.5, 1):
        x, y = _xy(0, v)
        out.append(f'<text x="{x - 4}" y="{y + 4}" text-anchor="end" font-size="10">{v}</text>')
        x, y = _xy(v, 0)
        out.append(f'<text x="{x}" y="{y + 12}" text-anchor="middle" font-size="10">{v}</text>')
    return "".join(out)


def runs_chart(runs: list[dict]) -> str:
    if not runs:
        return "<p>No training runs yet: label photos, then Retrain (or `imgrank train`).</p>"
    n = max(1, len(runs) - 1)
    body = _ticks()
    for key in ("ap", "auc"):
        pts = [(i / n, r[key]) for i, r in enumerate(runs) if r[key] is not None]
        body += _polyline(pts, COLOURS[key])
        for x, y in pts:
            cx, cy = _xy(x, y)
            body += f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="3" fill="{COLOURS[key]}"/>'
    first = datetime.datetime.fromtimestamp(runs[0]["at"]).strftime("%Y-%m-%d %H:%M")
    legend = '<p class="legend"><b class="ap">AP</b> and <b class="auc">ROC AUC</b>'
    return _frame(
        "Validation AP and ROC AUC by run", body, f"runs 1-{int(runs[-1]['id'])} (from {first})", ""
    ) + (legend + " on each run's validation split.</p>")


def pr_curve(y: np.ndarray, p: np.ndarray) -> list[tuple[float, float]]:
    """(recall, precision) points of the delete class, best score first."""
    order = np.argsort(-p, kind="mergesort")
    hits = np.cumsum(y[order])
    k = np.arange(1, len(y) + 1)
    return [(0.0, 1.0)] + list(zip((hits / max(1, y.sum())).tolist(), (hits / k).tolist(), strict=True))


def pr_chart(y: list[int], p: list[float]) -> str:
    y_, p_ = np.array(y, int), np.array(p, float)
    if len(y_) == 0 or y_.min() == y_.max():
        return "<p>The precision-recall curve needs labelled photos of both kinds with scores.</p>"
    chance = y_.mean()
    cx0, cy = _xy(0, chance)
    cx1, _ = _xy(1, chance)
    line = f'<line x1="{cx0}" y1="{cy}" x2="{cx1}" y2="{cy}" stroke="#aaa" stroke-dasharray="4"/>'
    body = _ticks() + line + _polyline(pr_curve(y_, p_), "#1864ab")
    return _frame("Precision-recall of delete (labelled photos)", body, "recall", "precision")


def histogram_chart(y: list[int], p: list[float], bins: int = 20) -> str:
    y_, p_ = np.array(y, int), np.array(p, float)
    if len(y_) == 0:
        return "<p>No labelled photos with scores yet.</p>"
    edges = np.linspace(0, 1, bins + 1)
    counts = {k: np.histogram(p_[y_ == v], edges)[0] for k, v in (("keep", 0), ("delete", 1))}
    top = max(1, max(int(c.max()) for c in counts.values()))
    body = _ticks()
    width = (W - PAD - 8) / bins
    for k, c in counts.items():
        for i, n in enumerate(c):
            if n:
                x, y0 = _xy(edges[i], n / top)
                _, base = _xy(0, 0)
                body += (
                    f'<rect x="{x + (width / 2 if k == "delete" else 0):.1f}" y="{y0:.1f}" '
                    f'width="{width / 2:.1f}" '
                    f'height="{base - y0:.1f}" fill="{COLOURS[k]}" opacity="0.8">'
                    f"<title>{k}: {n}</title></rect>"
                )
    title = "Scores of labelled photos: keep (green) and delete (red)"
    return _frame(title, body, "deletion score", f"count (max {top})")


def confusion_table(confusion: dict | None) -> str:
    if not isinstance(confusion, dict) or not confusion:
        return "<p>No confusion matrix yet (it comes with a trained head's validation).</p>"
    cells = {t: confusion.get(t) if isinstance(confusion.get(t), dict) else {} for t in ("keep", "delete")}
    rows = "".join(
        f"<tr><th>{t}</th><td>{_count(cells[t].get('keep'))}</td><td>{_count(cells[t].get('delete'))}</td></tr>"
        for t in ("keep", "delete")
    )
    return (
        '<table class="confusion">'
        "<caption>Confusion on validation (rows: label, columns: predicted)</caption>"
        f"<tr><th></th><th>keep</th><th>delete</th></tr>{rows}</table>"
    )


def counts_table(counts: dict) -> str:
    rows = "".join(
        f"<tr><th>{html.escape(source)}</th><td>{_count(by.get('keep', 0))}</td>"
        f"<td>{_count(by.get('delete', 0))}</td></tr>"
        for source, by in sorted(counts["by_source"].items())
    )
    total = counts["by_label"]
    return (
        '<table class="counts"><caption>Labels by source</caption>'
        "<tr><th></th><th>keep</th><th>delete</th></tr>"
        f"{rows}<tr><th>all</th><td>{_count(total.get('keep', 0))}</td>"
        f"<td>{_count(total.get('delete', 0))}</td></tr></table>"
    )


def render(data: dict) -> str:
    """The metrics as one HTML fragment."""
    source = {
        "prior": "the cold-start prior (no head yet)",
        "head": f"the head of run {_count(data['active_run'])}",
    }
    note = (
        "Scores of labelled photos come from "
        + source.get(data["source"] or "", "nothing yet")
        + (" and include photos the head was trained on (optimistic)." if data["source"] == "head" else ".")
    )
    return (
        '<section class="metrics">'
        f"<div>{runs_chart(data['runs'])}</div>"
        f"<div>{pr_chart(data['y'], data['p'])}</div>"
        f"<div>{histogram_chart(data['y'], data['p'])}</div>"
        f"<div>{confusion_table(data['confusion'])}{counts_table(data['labels'])}</div>"
        f'<p class="note">{html.escape(note)}</p></section>'
    )
