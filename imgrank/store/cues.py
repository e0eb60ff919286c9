"""The `cues` table: what the decoding worker measured per content hash for the cold-start prior
(`imgrank.prior.measure_cues`). Owns the table; nothing else runs SQL on it. The cues' meaning and
math are `imgrank.prior`'s.

No sqlite-utils at import: `train --data` imports the prior, which reads its cues here, without a store.
"""

from __future__ import annotations

import json

MEASURES = ("sharpness", "dark", "bright", "mean")  # the measurements stored per photo


def store_cues(db, rows: list[tuple[str, dict]]) -> None:
    """Record the cues measured for these content hashes: (sha256, {measure: value for MEASURES})."""
    db.conn.executemany(
        "INSERT OR REPLACE INTO cues (sha256, sharpness, dark, bright, mean) VALUES (?, ?, ?, ?, ?)",
        [(sha, c["sharpness"], c["dark"], c["bright"], c["mean"]) for sha, c in rows],
    )


def load_cues(db, shas: list[str]) -> dict[str, dict[str, float]]:
    """The recorded cues of these content hashes, by hash (those never measured are absent)."""
    # lazy: sqlite_utils
    from imgrank.store.db import IN_JSON  # here: `train --data` imports the prior and opens no database

    rows = db.execute(
        f"SELECT sha256, sharpness, dark, bright, mean FROM cues WHERE sha256 IN {IN_JSON}",
        [json.dumps(shas)],
    )
    return {r[0]: {"sharpness": r[1], "dark": r[2], "bright": r[3], "mean": r[4]} for r in rows}
