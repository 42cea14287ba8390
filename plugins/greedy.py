"""The default strategy: per-layer sensitivity, then greedy allocation to the least sensitive layers.

1. Speed gate: techniques that are all-or-nothing for speed (INT8) are probed
   uniformly, once per encoding variant, on the target. The fastest variant
   is kept; if none beats the baseline, the technique is dropped and the run
   notes why. (INT8 is slower than FP32 for some models and CPUs.)
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
from edgeslim.plan import Plan, empty_plan, set_knob
from edgeslim.search import SearchSession
from edgeslim.strategy import Strategy


@dataclass
class Move:
    layer: str
    knob: str
    level: Any
    off: Any
    sensitivity: float
    technique: str


GATE_MARGIN = 0.97  # a gated technique must be at least 3% faster than the baseline to stay


def compose(base: Plan, moves: list[Move]) -> Plan:
    plan = base
    for move in moves:
        plan = set_knob(plan, move.layer, move.knob, move.level, move.off)
    return plan


class GreedySensitivity(Strategy):
    name = "greedy"
    description = "per-layer sensitivity, then the least-sensitive moves until the measured latency meets the budget"

    def run(self, session: SearchSession) -> None:
        base = empty_plan()
        baseline_ms = session.latency_of(session.baseline)
        assert baseline_ms is not None
        techniques = dict(session.techniques)

        # 1. speed gate
        for name, tech in list(techniques.items()):
            if not tech.speed_gated:
                continue
            knobs = [k for k in tech.knobs(session.source) if k.layer is not None]
            if not knobs:
                continue
            uniform = compose(empty_plan(), [Move(k.layer, k.name, k.levels[1], k.levels[0], 0.0, name)
                                             for k in knobs])
            best_variant, best_ms = None, None
            for variant in tech.variants(session.source) or [{}]:
                probe = {"layers": uniform["layers"], "model": {**uniform["model"], **variant}}
                record = session.evaluate(probe, purpose=f"gate:{name}")
                ms = session.latency_of(record)
                if ms is not None and (best_ms is None or ms < best_ms):
                    best_variant, best_ms = variant, ms
            if best_ms is None or best_ms > GATE_MARGIN * baseline_ms:
                del techniques[name]
                session.notes.append(
                    f"{name} dropped: uniform {name} measured {best_ms:.3f} ms vs baseline {baseline_ms:.3f} ms "
                    "(not faster on this target)" if best_ms else f"{name} dropped: no probe could be measured")
            else:
                base = {"layers": {}, "model": {**base["model"], **(best_variant or {})}}
                session.notes.append(f"{name}: uniform probe {baseline_ms / best_ms:.2f}x faster than the baseline "
                                     f"with {best_variant}")

        # 1b. settings that change accuracy only (INT8 calibration): scored on the host, the best kept
        for name, tech in techniques.items():
            variants = tech.accuracy_variants(session.source)
            knobs = [k for k in tech.knobs(session.source) if k.layer is not None]
            if len(variants) < 2:
                continue
            uniform = compose(base, [Move(k.layer, k.name, k.levels[1], k.levels[0], 0.0, name) for k in knobs])
            scored = [(session.metric_drop(session.score({"layers": uniform["layers"],
                                                          "model": {**uniform["model"], **v}})), i)
                      for i, v in enumerate(variants)]
            drop, best = min(scored)
            base = {"layers": base["layers"], "model": {**base["model"], **variants[best]}}
            session.notes.append(f"{name}: {variants[best]} kept (uniform, scored on the host: "
                                 + ", ".join(f"{list(variants[i].values())[0]} {-d:+.4f}" for d, i in scored) + ")")

        # 2. sensitivity of every single move
        session.reporter.phase("per-layer sensitivity (scored on the host)")
        moves: list[Move] = []
        offered = [(name, knob) for name, tech in techniques.items() if session.offers(tech)
                   for knob in tech.knobs(session.source)]
        offered += [(session.target.name, knob) for knob in session.target.knobs()]  # e.g. OpenVINO precision
        for name, knob in offered:
            floor = 0.0
            for level in knob.levels[1:]:
                record = session.score(set_knob(base, knob.layer, knob.name, level, knob.levels[0]))
                session.reporter.advance(f"{knob.layer} {knob.name}={level}")
                # a deeper level is never ranked before a shallower one of the same knob
                floor = max(floor, session.metric_drop(record))
                moves.append(Move(knob.layer, knob.name, level, knob.levels[0], floor, name))
        if not moves:
            session.notes.append("no technique offers a knob for this model")
            return
        # stable sort: equal sensitivities keep knob order, so a deeper level stays after a shallower one
        ordered = sorted(moves, key=lambda m: m.sensitivity)

        # 3. the smallest prefix whose measured latency meets the budget
        session.reporter.phase("allocating compression (measured on the target)")
        # size-only knobs (weight sharing, low-bit weights) change no kernel: the table need not probe them
        predictor = session.build_predictor(base, [knob for name, knob in offered
                                                   if name not in techniques or techniques[name].reduces_latency])
        if predictor is None:
            found = self._bisect(session, base, ordered)
        else:
            found = self._guided(session, base, ordered)
        if found is None:
            return  # even every move at once misses the budget; the session reports the fastest

        # 4. refinement: undo one move at a time, most sensitive first
        chosen = ordered[:found]
        for drop in sorted(range(len(chosen)), key=lambda i: -chosen[i].sensitivity)[:4]:
            if session.trials_left() <= 0:
                break
            rest = chosen[:drop] + [m for m in chosen[drop + 1 :]
                                    if not (m.layer == chosen[drop].layer and m.knob == chosen[drop].knob)]
            plan = compose(base, rest)
            if session.worth_measuring(plan):
                session.evaluate(plan, purpose="greedy:refine")
            else:
                session.skip_predicted(plan, purpose="greedy:refine")

    @staticmethod
    def _bisect(session: SearchSession, base: Plan, ordered: list[Move]) -> int | None:
        """Binary search on the prefix length, every step measured: O(log moves) measurements."""
        if not session.meets_budget(session.evaluate(compose(base, ordered), purpose="greedy:all")):
            return None
        lo, hi = 1, len(ordered)
        found = hi
        while lo < hi:
            mid = (lo + hi) // 2
            if session.meets_budget(session.evaluate(compose(base, ordered[:mid]), purpose=f"greedy:k={mid}")):
                hi = found = mid
            else:
                lo = mid + 1
        return found

    @staticmethod
    def _guided(session: SearchSession, base: Plan, ordered: list[Move]) -> int | None:
        """The same answer as :meth:`_bisect`, with the latency table choosing where to measure.

        Each step measures the shortest prefix the (online-corrected) table predicts under the budget and
        moves one bound of the interval, so with a good table two measurements settle it (the answer meets
        the budget, one move less does not). After two steps the choice is kept inside the
        middle half of the open interval, so a table that is wrong still costs only O(log moves).
        """
        assert session.budget_ms is not None
        lo, hi = 1, len(ordered)
        found = None
        steps = 0
        while lo <= hi:
            predicted = {k: session.predict(compose(base, ordered[:k])) or 0.0 for k in range(lo, hi + 1)}
            under = [k for k in range(lo, hi + 1) if predicted[k] <= session.budget_ms]
            k = under[0] if under else hi
            if steps >= 2:
                quarter = (hi - lo) // 4
                k = min(max(k, lo + quarter), hi - quarter)
            steps += 1
            record = session.evaluate(compose(base, ordered[:k]),
                                      purpose=f"greedy:k={k} (predicted {predicted[k]:.3f} ms)")
            if session.meets_budget(record):
                found, hi = k, k - 1
            else:
                lo = k + 1
        return found


@hookimpl
def edgeslim_register_strategies(register):
    register(GreedySensitivity)
