"""The baseline timed again while the search runs: a ratio budget is of the median of its timings.

Why: a ratio budget used to be a fraction of one timing of the original model, taken at the start, and on a shared
machine that timing can fall into a busy spell. A MobileNetV2-style search at 0.2x timed its baseline at 0.911 ms
(cv 0.12) while verification's side-by-side reference ran 0.815-0.870 ms: its budget was 5-11% looser, the
three candidates that met it in the search ran 0.202-0.209x in verification, and the answer fell back to a 67%
recipe (benchmark run of 2026-12-05 14:10). Now the baseline is timed :data:`FIRST_TIMINGS` times before the
search starts and once more, in an agent process of its own, whenever :data:`RETIME_EVERY_S` of search have passed
since the last timing, before the next candidate is measured. A busy spell then moves the budget no more than it
moves a median. The timings are kept in the store, so a resumed search goes on from them; the manifest's
``budget.baseline_timings_ms`` lists them and ``budget.baseline_ms`` is their median.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edgeslim.search import SearchSession

#: timings of the baseline before the search starts (the first is the baseline's own measurement)
FIRST_TIMINGS = 3
#: seconds of search after which the baseline is timed once more (at about 1 s a timing: a few percent of the run)
RETIME_EVERY_S = 60.0
#: the store's key for the timings
TIMINGS_META = "baseline_timings_ms"


class BaselineTimer:
    """Times the baseline's artifact again when due and feeds each timing to the budget."""

    def __init__(self, session: SearchSession, artifact: Path) -> None:
        self._session = session
        self._artifact = artifact
        self._last = time.monotonic()

    def start(self, first_ms: float) -> None:
        """The first timings: those a resumed search stored, else ``first_ms`` and :data:`FIRST_TIMINGS` - 1
        more, one after the other."""
        stored = self._session.store.get_meta(TIMINGS_META)
        self._session.budget.baseline_timings_ms.clear()  # measure_baseline again: the store's timings, once
        if stored:
            for ms in stored:
                self._session.budget.add_baseline_timing(float(ms))
            return
        self._session.budget.add_baseline_timing(first_ms)
        for _ in range(FIRST_TIMINGS - 1):
            self.time_again()
        self._save()

    def time_again_if_due(self) -> None:
        if time.monotonic() - self._last >= RETIME_EVERY_S:
            self.time_again()
            self._save()

    def time_again(self) -> None:
        self._last = time.monotonic()
        budget = self._session.budget
        stats = self._session.device.measure(self._artifact, counted_as="baseline")
        if stats.usable:  # an unusable timing (the device busy, say) leaves the budget where it was
            budget.add_baseline_timing(stats.statistic(budget.statistic))

    def _save(self) -> None:
        self._session.store.set_meta(TIMINGS_META, self._session.budget.baseline_timings_ms)
