"""Text a person reads, rendered from the results the core returns (the core formats nothing)."""

from __future__ import annotations


def _f(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


def format_report(run: dict) -> str:
    """The training report: held-out metrics of both recipes, which one became the head, warnings."""
    m, b = run["metrics"]["mlp"], run["metrics"]["baseline"]
    c = run["counts"]
    held = c["held_out"]
    chosen = (
        f"MLP, {run['epochs']} epochs"
        if run["recipe"] == "mlp"
        else "L2 logistic regression (it ranked the held-out photos better than the MLP)"
    )
    lines = [
        f"labelled: {c['delete']} delete, {c['keep']} keep ({c['groups']} near-duplicate groups)",
        f"held out: {held['delete']} delete, {held['keep']} keep, each photo once, in {c['folds']} "
        f"cross-validation folds that keep near-duplicates together (chance AP {_f(m['chance_ap'])})",
        "",
        f"{'held-out photos':<22}{'MLP head':>10}{'baseline':>10}   (baseline: L2 logistic regression)",
    ]
    rows = [
        ("ROC AUC", "roc_auc"),
        ("average precision", "ap"),
        ("precision@10 delete", "precision_at_10"),
        ("precision@50 delete", "precision_at_50"),
    ]
    for title, key in rows:
        lines.append(f"{title:<22}{_f(m[key]):>10}{_f(b[key]):>10}")
    for cls in ("delete", "keep"):
        for what in ("precision", "recall"):
            lines.append(f"{cls + ' ' + what:<22}{_f(m[cls][what]):>10}{_f(b[cls][what]):>10}")
    a = run["metrics"]["active"]
    lines += [
        "",
        f"confusion ({'MLP' if run['recipe'] == 'mlp' else 'baseline'}, rows = true label):"
        "   predicted keep  predicted delete",
    ]
    for cls in ("keep", "delete"):
        row = a["confusion"][cls]
        lines.append(f"  {cls:<36}{row['keep']:>14}{row['delete']:>18}")
    lines += [
        "",
        f"chosen on the held-out photos: {chosen}",
        f"the active head was refit on all {c['trained_on']} labels with that recipe; "
        "its scores are calibrated on the held-out predictions",
    ]
    lines.append(prior_line(run["metrics"].get("prior_features")))
    for group in c.get("too_big", []):
        lines.append(
            f"kept in training (too big to hold out): {group['size']} near-duplicates of {group['example']}"
        )
    lines += [f"warning: {w}" for w in run.get("warnings", [])]
    return "\n".join(lines)


def prior_line(pf: dict | None) -> str:
    """One line: whether the prior's features helped the head on the held-out photos."""
    if not pf:
        return "the prior's features were not offered (a head from before them)"
    if not pf["tried"]:
        return f"the prior's features were not tried: {pf['reason']}"
    verdict = "helped" if pf["used"] else "did not help"
    keep = "the head takes them" if pf["used"] else f"the head leaves them out (it needs +{pf['needed']:.3f})"
    aps = f"held-out AP {_f(pf['ap_with'])} with, {_f(pf['ap_without'])} without"
    return f"the prior's features {verdict}: {aps}; {keep}"
