"""Text a person reads, rendered from the results the core returns (the core formats nothing)."""

from __future__ import annotations

from imgrank.words import counts, plural


def _f(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


def verdict_line(v: dict | None) -> str | None:
    """The plain-words check: how many of the held-out deletes the head put near the top."""
    if not v or not v.get("deletes"):
        return None

    return (
        f"of the {plural(v['deletes'], 'photo')} you marked delete that it had not seen, it put "
        f"{v['found']} in its first {v['k']} (of {v['photos']} held out; a random order would put "
        f"about {v['chance']:g} there)"
    )


def curve_line(c: dict | None) -> str | None:
    """What the last doubling of labels bought on the held-out photos, and what more labels may buy."""
    if not c or c.get("ap_half") is None or c.get("ap_all") is None:
        return None
    gain = c["ap_all"] - c["ap_half"]
    seen = (
        f"learning curve: held-out AP {_f(c['ap_half'])} from half the labels ({c['labels_half']}), "
        f"{_f(c['ap_all'])} from all {c['labels_all']}"
    )
    if gain >= 0.02:
        return (
            seen
            + f"; about {c['labels_all']} more labels (twice as many) should add roughly {gain:.2f} again"
        )
    return seen + (
        "; more labels at random will change little: correct the ones `imgrank suspects` lists, "
        "or label photos of kinds it has not seen"
    )


def format_report(run: dict) -> str:
    """The training report: the verdict in plain words, then the held-out metrics of the recipes
    tried, which one became the head, the learning curve, warnings."""
    metrics = run["metrics"]
    a, b, mlp = metrics["active"], metrics["baseline"], metrics.get("mlp") or {}
    c = run["counts"]
    held = c["held_out"]
    tried = mlp.get("tried", True) and "ap" in mlp
    regression = "L2 logistic regression"
    if b.get("features") == "image":  # a run from before 7 December 2026, when this could be the head
        regression += " on the image vector alone"
    if b.get("chosen_by") == "evidence":
        regression += (
            " (your labels are explained no better by the file names and sizes than by chance, and "
            "better by the image: the evidence of every label, not the folds, chose its penalty)"
        )
    if run["recipe"] == "mlp":
        chosen = f"MLP, {run['epochs']} epochs"
    elif tried:
        chosen = f"{regression} (the MLP did not beat it by 0.01 of AP and one standard error)"
    else:
        chosen = (
            f"{regression} (the MLP is tried from {mlp.get('from_labels')} labels "
            f"with {mlp.get('from_deletes')} deletes)"
        )
    lines = [
        line for line in (verdict_line(metrics.get("verdict")), curve_line(metrics.get("curve"))) if line
    ]
    lines += [
        "",
        f"labelled: {c['delete']} delete, {c['keep']} keep ({c['groups']} near-duplicate groups)",
        f"held out: {held['delete']} delete, {held['keep']} keep, each photo once, in {c['folds']} "
        f"cross-validation folds that keep near-duplicates together (chance AP {_f(a['chance_ap'])})",
        "",
        f"{'held-out photos':<22}{'baseline':>10}"
        + (f"{'MLP head':>10}" if tried else "")
        + "   (baseline: L2 logistic regression)",
    ]
    rows = [
        ("ROC AUC", "roc_auc"),
        ("average precision", "ap"),
        ("precision@10 delete", "precision_at_10"),
        ("precision@50 delete", "precision_at_50"),
    ]
    for title, key in rows:
        lines.append(f"{title:<22}{_f(b[key]):>10}" + (f"{_f(mlp[key]):>10}" if tried else ""))
    for cls in ("delete", "keep"):
        for what in ("precision", "recall"):
            lines.append(
                f"{cls + ' ' + what:<22}{_f(b[cls][what]):>10}"
                + (f"{_f(mlp[cls][what]):>10}" if tried else "")
            )
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
    lines.append(prior_line(metrics.get("prior_features")))
    contrast = contrast_line(b)
    if contrast:
        lines.append(contrast)
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
    if pf.get("by") == "logistic":  # compared by the quick recipe (heads since b9a4363)
        aps += " (L2 logistic regression)"
    return f"the prior's features {verdict}: {aps}; {keep}"


def contrast_line(baseline: dict) -> str | None:
    """One line: whether the head weighs how each photo differs from the photos like it (None for a
    head from before it, or trained with no sample of the folder)."""
    if "contrast" not in baseline:
        return None
    aps = baseline.get("contrast_ap")
    held = f" (held-out AP {_f(aps['with'])} with it, {_f(aps['without'])} without)" if aps else ""
    if baseline["contrast"]:
        ways = baseline.get("differ")
        most = f", most by how shots of one burst differ ({plural(ways, 'direction')})" if ways else ""
        return (
            f"the head also weighs how each photo differs from the photos like it (the nearest of "
            f"{baseline['contrast']} clusters of your folder){most}{held}"
        )
    if aps:
        return f"the head leaves out how each photo differs from the photos like it{held}"
    return None


# --- one-line summaries: only what happened, with the right plurals (`--json` keeps every count) ---


def order_summary(result, dry_run: bool = False) -> str:
    """`imgrank order`'s line (an OrderResult)."""

    r = result
    if dry_run:
        if not r.touched:
            return f"nothing would change: all {plural(r.ordered, 'photo')} already in place"
        text = f"would set {r.touched} of {plural(r.ordered, 'mtime')}"
        return text + (f", {r.in_place} already in place" if r.in_place else "")
    parts = [f"{plural(r.touched, 'mtime')} set"] if r.touched else []
    parts += [f"{r.in_place} already in place"] if r.in_place else []
    parts += [f"{r.restored} no longer in the order given their own time back"] if r.restored else []
    parts += [f"{len(r.skipped)} skipped"] if r.skipped else []
    parts += [f"{len(r.failed)} failed"] if r.failed else []
    return f"ordered {plural(r.ordered, 'photo')}: {', '.join(parts)} ({r.seconds:.1f} s)"


def restore_summary(result, sidecars=None) -> str:
    """`imgrank restore`'s line (a RestoreResult, and the sidecars' SidecarRestore); files not found
    are told apart."""

    text = _mtimes_restored(result)
    s = sidecars
    if s is not None and (s.restored or s.removed or s.failed):
        done = counts([(s.restored, "put back"), (s.removed, "removed")], noun=None) or "none put back"
        text += f"; XMP sidecars: {done}" + (f", {len(s.failed)} left alone" if s.failed else "")
    return text


def xmp_summary(result, style: str) -> str:
    """`imgrank order --xmp`'s line (an XmpResult)."""

    r = result
    done = counts(
        [(r.written - r.created, "edited"), (r.created, "created"), (r.unchanged, "unchanged")], noun=None
    )
    text = f"XMP ratings ({style}): {plural(r.written + r.unchanged, 'sidecar')}"
    text += f" ({done})" if done else ""
    text += f", {r.rejected} marked rejected" if r.rejected else ""
    return text + (f", {len(r.failed)} failed" if r.failed else "")


def _mtimes_restored(result) -> str:

    r = result
    if r.restored:
        text = f"restored {plural(r.restored, 'mtime')}"
    else:
        text = "no mtime restored" if r.failed or r.missing else "nothing to restore"
    found = counts(
        [(r.already, "already original"), (r.followed, "found moved"), (r.forgotten, "missing forgotten")],
        noun=None,
    )
    text += f" ({found})" if found else ""
    return text + (f", {len(r.failed)} left alone" if r.failed else "")


def relabel_summary(applied: int, changed: int, indexed: int, failed: int) -> str:
    """`imgrank relabel`'s line, after the label: how many photos, what changed, what failed."""

    text = plural(applied, "photo") if applied else "no photos"
    done = counts([(changed, "changed"), (indexed, "newly indexed")], noun=None)
    text += f" ({done})" if done else " (unchanged)" if applied else ""
    return text + (f"; {failed} failed" if failed else "")


def scored_summary(n: int) -> str:
    """How many photos a head (or the prior) scored."""

    return f"{plural(n, 'photo')} scored" if n else "no photos to score"


def keeper_summary(learned: dict) -> str:
    """How the keeper of a burst is chosen, after dupes.learn_keeper."""

    seen = f"{plural(learned['pairs'], 'choice')} in {plural(learned['groups'], 'burst')}"
    if learned["learned"]:
        return f"burst keepers: learned from your {seen}"
    return (
        f"burst keepers: the lowest deletion score ({seen} of yours so far; "
        f"learned from {learned['needed']} bursts with a kept and a deleted shot)"
    )


def reviewed_summary(result: dict) -> str:
    """`imgrank reviewed --top N`'s line."""

    first = f"the first {result['looked_at']}"
    kept = result["kept"]
    text = f"{plural(kept, 'survivor')} of {first}" if kept else f"none of {first}"
    text += " labelled keep"
    more = counts(
        [(result["already_labelled"], "already labelled"), (result["gone"], "deleted since")], noun=None
    )
    return text + (f" ({more})" if more else "")


def unreadable_text(rows: list[dict], name) -> str:
    """`status --unreadable`: the files that are bad, then those imgrank failed on (see index.unreadable)."""
    out = []
    for cause, title in (
        ("file", "the file is bad"),
        ("imgrank", "imgrank failed on it (not the file's fault: the next `imgrank scan` reads it again)"),
    ):
        group = [r for r in rows if r["cause"] == cause]
        if group:
            out.append(f"{title} ({len(group)}):")
            out += [f"  {name(r['path'])}\t{r['reason']}" for r in group]
    return "\n".join(out)
