"""A first useful order on a big folder, before its first scan ends.

The first scan of 20,000 photos takes a long while on two cores; the owner should not wait for
all of it to see the least-wanted first. The scan reads the newest photos first (they are the
ones still to be sorted), and once FIRST_ORDER_AFTER of them are embedded, FirstOrder scores them
(with the cold-start prior, or the head) and orders them, while the scan goes on with the rest.
`scan --order` and the daemon's catch-up use it; either orders everything again at the end.
"""

from __future__ import annotations

import time
from collections.abc import Callable

FIRST_ORDER_AFTER = 2000


class FirstOrder:
    """`on_embedded` for index.scan: once `after` photos are embedded, score the unscored photos and
    call `order(db)`, once. `seconds` is then how long after this object was made that took."""

    def __init__(
        self, db, model_id: str, order: Callable, after: int | None = None, tell: Callable | None = None
    ):
        self.db, self.model_id, self.order, self.tell = db, model_id, order, tell
        self.after = after or FIRST_ORDER_AFTER
        self.start = time.monotonic()
        self.result = None  # what `order` returned
        self.embedded = 0  # photos embedded when it ran
        self.seconds: float | None = None

    def __call__(self, embedded: int) -> None:
        if self.seconds is not None or embedded < self.after:
            return
        from imgrank.runs import score_unscored  # lazy: sqlite_utils

        score_unscored(self.db, self.model_id)
        self.result = self.order(self.db)
        self.embedded = embedded
        self.seconds = time.monotonic() - self.start
        if self.tell and self.result is not None:
            self.tell(
                f"first order: {self.result.ordered} photos, {self.seconds:.0f} s after the start "
                "(the scan goes on)"
            )
