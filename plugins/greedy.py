"""The default strategy: per-layer sensitivity, then greedy allocation to the least sensitive layers.

1. Speed gate: techniques that are all-or-nothing for speed (INT8) are probed
   uniformly, once per encoding variant, on the target. The fastest variant
   is kept; if none beats the baseline, the technique is dropped and the run
   notes why. (INT8 is slower than FP32 for some models and CPUs.) When the
   gated techniques on every layer meet the budget (10% to spare) and lose
   nothing on the task's metric, that is the answer: the least compression
   that fits needs no per-layer move.
2. Sensitivity: every single move (one layer, one knob, one level further)
   is built and scored on the host, without measuring: a cheap ranking.
3. Allocation: moves are ordered by sensitivity (a layer's deeper level never
   before its shallower one). Candidate k applies the first k moves. Latency
   falls roughly monotonically with k, so a search on k finds the smallest
   k whose *measured* latency meets the budget: the least compression, hence
   the best metric, that fits (NetAdapt-style, with measurements deciding,
   never FLOPs). With the latency table (``edgeslim.predictor``) the table
   picks where to measure, usually two measurements; without it, a binary
   search, O(log moves) measurements.
4. Refinement: with trials left, neighbours of the answer (one move undone,
   starting with the most sensitive) are measured when the table predicts
   them near the budget; the session keeps the most accurate candidate that
   meets the budget.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from edgeslim import hookimpl
from edgeslim.plan import Plan, set_knob, uniform
from edgeslim.recipes import best_accuracy_variants, sensitivities
from edgeslim.speed_gate import speed_gate
from edgeslim.strategy import OfferedKnob, SearchAPI, Strategy

#: the lossless uniform plan must measure this far under the budget to end the search: verification times it
#: again, and a plan at the budget's edge that misses there needs the per-layer candidates to fall back on
SHORTCUT_MARGIN = 0.10


@dataclass
class Move:
    layer: str | None
    knob: str
    level: Any
    off: Any
    sensitivity: float
    technique: str


def compose(base: Plan, moves: list[Move]) -> Plan:
    plan = base
    for move in moves:
        plan = set_knob(plan, move.layer, move.knob, move.level, move.off)
    return plan


class GreedySensitivity(Strategy):
    name = "greedy"
    description = "per-layer sensitivity, then the least-sensitive moves until the measured latency meets the budget"

    def run(self, search: SearchAPI) -> None:
        dropped: set[str] = set()
        base = speed_gate(search, dropped)
        base = best_accuracy_variants(search, base, dropped)
        if self._lossless_gates_meet_the_budget(search, base, dropped):
            return
        offered = [o for o in search.knobs() if o.owner not in dropped]
        ordered = self._sensitivity(search, base, offered)
        if not ordered:
            search.note("no technique offers a knob for this model")
            return
        # the smallest prefix whose measured latency meets the budget
        search.phase("allocating compression (measured on the target)")
        # size-only knobs (weight sharing, low-bit weights) change no kernel: the table need not probe them
        if search.use_latency_table(base, [o.knob for o in offered if o.reduces_latency]):
            found = self._guided(search, base, ordered)
        else:
            found = self._bisect(search, base, ordered)
        if found is not None:  # None: even every move at once misses; the run reports the fastest
            self._refine(search, base, ordered[:found])

    @staticmethod
    def _lossless_gates_meet_the_budget(search: SearchAPI, base: Plan, dropped: set[str]) -> bool:
        """The gated techniques (INT8) on every layer, with the settings just chosen, measured: when that meets
        the budget with :data:`SHORTCUT_MARGIN` to spare and scores as the original does, the least compression
        that fits (this strategy's answer) needs no per-layer move, so the sensitivity phase (one recovery per
        move) would spend minutes to reach the same place. (A pruned candidate's recovery training can score a
        little above the original; ``--strategy knapsack`` measures those too.)"""
        gates = [g for g in search.speed_gates() if g.technique not in dropped]
        if not gates:
            return False
        plan = base
        for gate in gates:
            plan = uniform(plan, gate.knobs)
        record = search.measure(plan, purpose="greedy:uniform " + "+".join(g.technique for g in gates))
        latency = search.latency_of(record)
        if (not search.meets_budget(record) or search.metric_drop(record) > 0.0 or latency is None
                or latency > (1.0 - SHORTCUT_MARGIN) * search.budget_ms):
            return False
        search.note(f"uniform {'+'.join(g.technique for g in gates)} meets the budget with "
                    f"{SHORTCUT_MARGIN:.0%} to spare and loses nothing on the task's metric: the least compression "
                    "that fits needs no per-layer move, so none is scored (--strategy knapsack also tries pruned "
                    "and retrained candidates, which can score a little above the original)")
        return True

    @staticmethod
    def _sensitivity(search: SearchAPI, base: Plan, offered: list[OfferedKnob]) -> list[Move]:
        """Every single move scored on the host, ordered least sensitive first."""
        search.phase("per-layer sensitivity (scored on the host)")
        moves = [Move(o.knob.layer, o.knob.name, level, o.knob.levels[0], drop, o.owner)
                 for o, level, drop in sensitivities(search, base, offered)]
        # stable sort: equal sensitivities keep knob order, so a deeper level stays after a shallower one
        return sorted(moves, key=lambda m: m.sensitivity)

    @staticmethod
    def _refine(search: SearchAPI, base: Plan, chosen: list[Move]) -> None:
        """With trials left, undo one move at a time (most sensitive first) where the table predicts the
        result near the budget; the run keeps the most accurate candidate that meets it."""
        for drop in sorted(range(len(chosen)), key=lambda i: -chosen[i].sensitivity)[:4]:
            if search.trials_left() <= 0:
                break
            rest = chosen[:drop] + [m for m in chosen[drop + 1 :]
                                    if not (m.layer == chosen[drop].layer and m.knob == chosen[drop].knob)]
            plan = compose(base, rest)
            if search.worth_measuring(plan):
                search.measure(plan, purpose="greedy:refine")
            else:
                search.skip(plan, purpose="greedy:refine")

    @staticmethod
    def _bisect(search: SearchAPI, base: Plan, ordered: list[Move]) -> int | None:
        """Binary search on the prefix length, every step measured: O(log moves) measurements."""
        if not search.meets_budget(search.measure(compose(base, ordered), purpose="greedy:all")):
            return None
        lo, hi = 1, len(ordered)
        found = hi
        while lo < hi:
            mid = (lo + hi) // 2
            if search.meets_budget(search.measure(compose(base, ordered[:mid]), purpose=f"greedy:k={mid}")):
                hi = found = mid
            else:
                lo = mid + 1
        return found

    @staticmethod
    def _guided(search: SearchAPI, base: Plan, ordered: list[Move]) -> int | None:
        """The same answer as :meth:`_bisect`, with the latency table choosing where to measure.

        Each step measures the shortest prefix the (online-corrected) table predicts under the budget and
        moves one bound of the interval, so with a good table two measurements settle it (the answer meets
        the budget, one move less does not). After two steps the choice is kept inside the
        middle half of the open interval, so a table that is wrong still costs only O(log moves).
        """
        lo, hi = 1, len(ordered)
        found = None
        steps = 0
        while lo <= hi:
            predicted = {k: search.predict(compose(base, ordered[:k])) or 0.0 for k in range(lo, hi + 1)}
            under = [k for k in range(lo, hi + 1) if predicted[k] <= search.budget_ms]
            k = under[0] if under else hi
            if steps >= 2:
                quarter = (hi - lo) // 4
                k = min(max(k, lo + quarter), hi - quarter)
            steps += 1
            record = search.measure(compose(base, ordered[:k]),
                                      purpose=f"greedy:k={k} (predicted {predicted[k]:.3f} ms)")
            if search.meets_budget(record):
                found, hi = k, k - 1
            else:
                lo = k + 1
        return found


@hookimpl
def edgeslim_register_strategies(register):
    register(GreedySensitivity)
