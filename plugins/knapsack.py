"""Allocation as a constrained optimisation (``--strategy knapsack``), measured on the device every round.

1. Speed gate and accuracy-only settings, as every strategy (``edgeslim.recipes``).
2. The latency table (probes profiled on the device) predicts what each option of each layer saves.
3. Uniform recipes (uniform INT8, uniform channel pruning at each level, all blocks removed, the target's
   precision modes, each with INT8): per family, architectures are timed (no recovery) down to the least
   compressed level that meets the budget (the table only picks where to start, it rules nothing out), and
   that level (and the one above it, when that missed within a timing's noise) is measured with the run's short
   recovery: the answer is chosen from everything measured, so it is never less accurate than a recipe that meets
   it. Under ``--time-budget`` the stops that meet the budget (one per knob) and those near misses are measured
   first and always; the rest within half the time left (``RECIPE_TIME_SHARE``).
4. One-shot sensitivity: every single move (one layer, one knob, one level) built *without training*
   (least-squares reconstruction only) and scored on the host: a cheap ranking, not the answer's accuracy;
   each knob level's costs then scaled by its measured recipes' loss over their one-shot sum.
   Under ``--time-budget`` it uses at most half the time left (``edgeslim.recipes.SENSITIVITY_TIME_SHARE``).
5. Rounds: a multiple-choice knapsack over the layers (``edgeslim.allocation``, HALP / HAWQ-V3 style: least
   predicted accuracy loss whose predicted latency fits :data:`ROUND_AIM` under the budget) is solved, measured
   with the short recovery, the table refitted with that measurement and the solution's remaining error added to
   the next round's predictions; solved again, a few rounds. A round whose
   predicted accuracy loss is far beyond the best in-budget candidate's measured one is not measured
   (:data:`HOPELESS_MULTIPLE`): it cannot win, and the device time goes to the next steps.
6. Anchored rounds: when the best in-budget candidate runs well under the budget, the program is solved again
   over its own moves only (each made lighter or undone), predicted relative to its measurement, so the unused
   time buys accuracy back (:data:`ANCHORED_ROUNDS`).
7. Margin round: when the most accurate in-budget candidate measured within :data:`VERIFY_MARGIN` under the
   budget, verification (interleaved) often finds it just over: one more solution is aimed at ``(1 -
   VERIFY_MARGIN)`` of the budget and measured, for verification to fall back on (not the next uniform recipe).
8. The run then gives the best in-budget candidate its longer final recovery and verifies it.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

from edgeslim import allocation_groups, hookimpl
from edgeslim.allocation import Group, solve
from edgeslim.allocation_groups import build_groups, lighter_than, off_level
from edgeslim.plan import Plan, set_knob
from edgeslim.recipes import (
    NEAR_MISS,
    Recipe,
    best_accuracy_variants,
    measuring_order,
    sensitivities,
    uniform_recipes,
    walk_family,
)
from edgeslim.records import CandidateRecord
from edgeslim.speed_gate import speed_gate
from edgeslim.strategy import OfferedKnob, SearchAPI, Strategy, TrialsExhausted

#: allocation rounds (each one measured candidate) after the recipes, each aimed ``ROUND_AIM`` under the budget: a
#: table right on average puts half its solutions just over (MobileNetV2-style 0.2x: +0.07%, then no answer)
ROUNDS = 4
ROUND_AIM = 0.05
#: under ``--time-budget``, of the time left when the recipes start, the most their walk and measurements may use
#: (the stops that meet the budget, one per knob, are measured regardless: the answer must match them); the
#: sensitivity phase and the allocation rounds keep the rest
RECIPE_TIME_SHARE = 0.5
#: a best candidate measured this close under the budget gets a margin round aimed this far under it: on
#: FashionResNet (0.3-0.6 ms) the interleaved verification found the search's best candidates 0-10% over a budget
#: their one measurement had met by 1-9% (ratios 0.552 and 0.500 against 0.5, 0.326 and 0.330 against 0.3)
VERIFY_MARGIN = 0.10
#: a round is not measured when its predicted accuracy loss exceeds this multiple of the best in-budget
#: candidate's loss, plus ``HOPELESS_SLACK``. Without it an over-predicting table drove four rounds ever deeper
#: (predicted loss 0.03 to 0.84) while the measured latency stayed put; they lost 3 to 80 points. The margin
#: round is held to the best candidate under its own target: it is what verification falls back on when the best
#: one, at the budget's edge, misses (held to lossless INT8, it was skipped; the fallback was 4 points worse). The
#: yardstick is the best candidate's measured loss or, when larger, its predicted one: held to the zero of every
#: block removed (lossless after distillation), no MobileNetV2 round was measured. Anchored rounds only lighten a
#: measured plan, so they predict less loss than it by construction and are not held to it
HOPELESS_MULTIPLE = 2.0
HOPELESS_SLACK = 0.01
#: anchored rounds: when the most accurate in-budget candidate runs more than twice :data:`VERIFY_MARGIN` under the
#: budget, the integer program is solved again over its own moves only (each layer as it has it, lighter, or
#: undone), predicted relative to its measurement, aimed at ``(1 - VERIFY_MARGIN)`` of the budget: the time it
#: leaves unused buys accuracy back. A prediction anchored at a measured plan is off by far less than one from
#: the uncompressed model (a recipe with every block removed ran at 0.59x of an OpenVINO budget while the
#: unanchored rounds, predicted at the budget, measured 15-24% over it). Each measured solution is one more
#: point the next round's prediction is corrected at (:meth:`KnapsackAllocation._solve_anchored`), so a round
#: that missed is followed by one that knows by how much
ANCHORED_ROUNDS = 3


class KnapsackAllocation(Strategy):
    name = "knapsack"
    description = ("one-shot sensitivity + device latency table -> integer program (least accuracy loss within "
                   "the budget), measured and re-solved; uniform recipes always measured")

    def __init__(self) -> None:
        self.measured: list[CandidateRecord] = []  # what this strategy measured: the margin round reads it
        self.tried: set[str] = set()  # the solutions measured (repr of their plans)
        self.anchored: list[CandidateRecord] = []  # the anchored rounds' measured solutions
        self.correction = (0.0, 1.0)  # (slack, factor) after the last round: the margin round starts from it
        self.predicting: tuple = ()  # (base, offered, drops) once scored: a measured plan's predicted loss

    def run(self, search: SearchAPI) -> None:
        dropped: set[str] = set()
        close_calls: set[str] = set()  # dropped, but within the machine's noise: still paired by the recipes
        base = speed_gate(search, dropped, close_calls)
        base = best_accuracy_variants(search, base, dropped)
        offered = [o for o in search.knobs() if o.owner not in dropped and o.reduces_latency]
        if not offered:
            search.note("no technique offers a latency knob for this model")
            return
        # the recipes are measured before the sensitivity phase: under --time-budget, what the answer is never
        # worse than is in hand before the (host-only) ranking spends its share of the time
        has_table = search.use_latency_table(base, [o.knob for o in offered if o.knob.layer is not None])
        recipe_ms = self._recipes(search, base, dropped - close_calls)
        drops = self._calibrated(search, base, offered, self._sensitivity(search, base, offered))
        self.predicting = (base, offered, drops)
        self._rounds(search, base, offered, drops, has_table, recipe_ms)
        self._anchored_rounds(search, base, offered, drops, has_table, recipe_ms)
        self._margin_round(search, base, offered, drops, has_table, recipe_ms)

    # --- phases -------------------------------------------------------------------------------------------------

    @staticmethod
    def _sensitivity(search: SearchAPI, base: Plan, offered: list[OfferedKnob]) -> dict[tuple, float]:
        """{(layer, knob, level): metric drop} of every single move, one-shot; a deeper level never costs less."""
        search.phase("per-layer sensitivity (one-shot, scored on the host)")
        drops = {(o.knob.layer, o.knob.name, level): drop
                 for o, level, drop in sensitivities(search, base, offered, one_shot=True)}
        scored = len(drops)
        if imputed := allocation_groups.impute_unscored(drops, offered):
            search.note(f"knapsack: {imputed} moves the sensitivity phase did not score cost the "
                        f"{allocation_groups.IMPUTED_QUANTILE:.0%} quantile of what the same knob and level cost on "
                        f"the layers it scored ({scored} moves scored)")
        return drops

    def _calibrated(self, search: SearchAPI, base: Plan, offered: list[OfferedKnob], drops: dict[tuple, float]
                    ) -> dict[tuple, float]:
        """The one-shot costs scaled per knob level by what its measured recipes lost (``calibrate_to_recipes``)."""
        drops, factors = allocation_groups.calibrate_to_recipes(
            drops, offered, base, [(r.plan, search.metric_drop(r)) for r in self.measured])
        if factors:
            search.note("knapsack: one-shot costs scaled by measured over predicted loss of the recipes: " + ", ".join(
                f"{name}={level} x{factor:.3g}" for (name, level), factor in factors.items()))
        return drops

    def _recipes(self, search: SearchAPI, base: Plan, dropped: set[str]) -> dict[str, float]:
        """Per recipe family, measure the least compressed recipe whose latency meets the budget (deeper ones
        compress more for nothing). The walk times architectures only (``probe_latency``, no recovery; the table's
        own timing of one reused when clear of the budget), so only its stop pays for recovery. The table only says
        where to start: the level it predicts nearest under the budget, then shallower levels while they meet it,
        or deeper ones until one does (none: the fastest). Nothing is ruled out on a prediction, so the answer is
        never less accurate than a recipe that meets the budget; the level just shallower than a stop is measured
        too when it missed by a timing's noise (:data:`~edgeslim.recipes.NEAR_MISS`). Under ``--time-budget`` the
        stops are measured in :func:`~edgeslim.recipes.measuring_order` within :data:`RECIPE_TIME_SHARE` of the
        time left (the notes name those skipped).
        Returns {recipe label: timed ms}."""
        search.phase("uniform recipes (measured on the target)")
        families: dict[str, list[Recipe]] = {}
        for recipe in uniform_recipes(search, base, dropped):
            families.setdefault(recipe.family, []).append(recipe)
        timed: dict[str, float] = {}

        def meets(recipe: Recipe) -> bool:
            ms = search.probe_latency(recipe.plan)
            search.progress(f"{recipe.label}: {'-' if ms is None else f'{ms:.3f} ms'}")
            if ms is not None:
                timed[recipe.label] = ms
            return ms is not None and ms <= search.budget_ms

        stops: list[Recipe] = []
        near: list[Recipe] = []  # a family's shallower level that missed by a timing's noise: verification judges
        left = search.time_left()
        for recipes in families.values():
            if search.time_left() == 0.0:
                break
            stop, near_miss = walk_family(search, recipes, meets, timed)
            stops.append(stop)
            near.extend([near_miss] if near_miss is not None else [])
        if near:
            search.note(f"knapsack: measured beside their family's stop, timed within {NEAR_MISS:.0%} over the "
                        "budget of the moment: " + ", ".join(f"{r.label} {timed[r.label]:.3f} ms" for r in near))
        must = 0  # the first stops measured even past the share (the very first always is): see measuring_order
        if left is not None and len(stops) > 1:  # each measurement pays a recovery: order them for the clock
            stops, must = measuring_order(stops, lambda r: search.metric_drop(search.score(
                r.plan, purpose="recipe rank", one_shot=True)), timed, search.budget_ms, near)
        else:
            stops += near
        keep = None if left is None else left * (1.0 - RECIPE_TIME_SHARE)
        for measured, recipe in enumerate(stops):
            if search.time_left() == 0.0:
                search.note(f"--time-budget spent: the uniform recipes stopped after {measured} measured "
                            f"({len(timed)} architectures timed)")
                break
            if measured >= max(must, 1) and keep is not None and (search.time_left() or 0.0) <= keep:
                search.note(f"--time-budget: the uniform recipes used their share ({RECIPE_TIME_SHARE:.0%} of the "
                            f"{left:.0f} s left at their start; the first {must}, post-training or meeting the budget, "
                            f"always measured) after {measured} of {len(stops)} ({len(timed)} timed); not measured: "
                            + ", ".join(r.label for r in stops[measured:]))
                break
            if search.trials_left() <= ROUNDS:  # the allocation rounds keep their trials
                search.note(f"--trials: the uniform recipes stopped after {measured} measured ({len(timed)} timed), "
                            f"leaving {ROUNDS} trials to the allocation rounds")
                break
            self.measured.append(search.measure(recipe.plan, purpose=f"recipe: {recipe.label}"))
        return timed

    def _rounds(self, search: SearchAPI, base: Plan, offered: list[OfferedKnob], drops: dict[tuple, float],
                has_table: bool, recipe_ms: dict[str, float]) -> None:
        """Solve, measure, correct, re-solve. With a table, every measurement refits it; each round re-derives the
        options' savings and scales a whole plan's prediction by the last solution's remaining error (``factor``,
        measured over predicted: a ratio, a deep plan's error in ms says little of a light one's); else ``slack``."""
        search.phase("allocation (integer program, measured on the target)")
        budget, slack, factor = search.budget_ms, 0.0, 1.0
        aim = (1.0 - ROUND_AIM) * budget
        for round_no in range(1, ROUNDS + 1):
            if search.trials_left() <= 0:
                return
            groups, base_ms = build_groups(search, base, offered, drops, has_table, recipe_ms)
            plan, allocation, predicted = self._solve(search, base, offered, groups, base_ms, slack, factor, has_table,
                                                      aim)
            key = repr(plan)
            if key in self.tried:
                return  # the correction no longer changes the answer
            self.tried.add(key)
            if self._hopeless(search, allocation.predicted_cost, f"round {round_no}"):
                return
            purpose = (f"knapsack: round {round_no}, aimed at {aim:.3f} ms, predicted {predicted:.3f} ms, predicted "
                       f"drop {allocation.predicted_cost:.4f}{'' if allocation.feasible else ' (fastest: none fits)'}")
            try:
                record = search.measure(plan, purpose=purpose)
            except TrialsExhausted:
                return
            self.measured.append(record)
            measured = search.latency_of(record)
            if measured is None or (not allocation.feasible and measured > budget):
                return  # failed, or even the fastest combination misses: nothing to buy back
            if search.meets_budget(record) and measured >= 0.95 * budget:
                return  # within 5% under the budget: little left to buy back
            if has_table:
                factor = measured / (search.predict(plan) or measured)
            else:
                slack += budget - measured  # over: ask for that much more saving; under: give it back
            self.correction = (slack, factor)

    def _best_in_budget(self, search: SearchAPI, within_ms: float | None = None) -> CandidateRecord | None:
        """The most accurate candidate this strategy measured within the budget (the fastest among equals);
        with ``within_ms``, among those that ran at most that long."""
        in_budget = [r for r in self.measured if search.meets_budget(r)
                     and (within_ms is None or (search.latency_of(r) or 0.0) <= within_ms)]
        return min(in_budget, key=lambda r: (search.metric_drop(r), search.latency_of(r) or 0.0), default=None)

    def _hopeless(self, search: SearchAPI, predicted_cost: float, what: str, within_ms: float | None = None) -> bool:
        """Whether a solution predicted to lose ``predicted_cost`` cannot beat the best in-budget candidate in
        hand (:data:`HOPELESS_MULTIPLE`; ``within_ms`` as in :meth:`_best_in_budget`); says so in the notes."""
        best = self._best_in_budget(search, within_ms)
        if best is None:
            return False
        # the same yardstick for both: what the prediction says of the best candidate, when it says more than
        # its measurement (all blocks removed, lossless after distillation, is a large loss one-shot)
        own = allocation_groups.plan_loss(best.plan, *self.predicting) if self.predicting else math.inf
        yardstick = max(0.0, search.metric_drop(best), own if math.isfinite(own) else 0.0)
        if predicted_cost <= HOPELESS_MULTIPLE * yardstick + HOPELESS_SLACK:
            return False
        search.note(f"knapsack: {what} not measured: its predicted accuracy loss {predicted_cost:.4f} is more than "
                    f"{HOPELESS_MULTIPLE:g}x (+{HOPELESS_SLACK}) the {yardstick:.4f} of the best in-budget candidate "
                    f"measured ({best.purpose}; its measured loss or, if larger, its predicted one)")
        return True

    def _anchored_rounds(self, search: SearchAPI, base: Plan, offered: list[OfferedKnob], drops: dict[tuple, float],
                         has_table: bool, recipe_ms: dict[str, float]) -> None:
        """Buy accuracy back with the budget the best in-budget candidate leaves unused (:data:`ANCHORED_ROUNDS`):
        the integer program over that candidate's own moves, each layer kept, made lighter or undone, its
        latency predicted relative to the candidate's measurement."""
        if not has_table:
            return  # the prediction is anchored through the table; without one the shares are too crude
        for round_no in range(1, ANCHORED_ROUNDS + 1):
            anchor = self._best_in_budget(search)
            target = (1.0 - VERIFY_MARGIN) * search.budget_ms
            anchor_ms = None if anchor is None else search.latency_of(anchor)
            if (anchor is None or anchor_ms is None or anchor_ms > (1.0 - 2 * VERIFY_MARGIN) * search.budget_ms
                    or search.trials_left() <= 0 or search.time_left() == 0.0):
                return
            anchor_predicted = search.predict(anchor.plan)
            if not anchor_predicted:
                return
            groups, base_ms = build_groups(search, base, offered, drops, has_table, recipe_ms)
            groups, anchor_cost = lighter_than(groups, anchor.plan, offered)
            plan, allocation, predicted = self._solve_anchored(search, base, offered, groups, base_ms, has_table,
                                                               anchor, anchor_predicted, target)
            if (not allocation.feasible or predicted > search.budget_ms or plan == base
                    or allocation.predicted_cost >= anchor_cost - 1e-9 or repr(plan) in self.tried):
                return  # nothing the unused time can buy back, as predicted
            if not self._measure_noted(
                    search, plan,
                    note=(f"anchored round {round_no}: the best in-budget candidate ({anchor.purpose}) measured "
                          f"{anchor_ms:.3f} ms of the {search.budget_ms:.3f} ms budget; its moves re-chosen to buy "
                          f"accuracy back, aimed at {target:.3f} ms"),
                    purpose=(f"knapsack: anchored round {round_no}, aimed at {target:.3f} ms, predicted "
                             f"{predicted:.3f} ms, predicted drop {allocation.predicted_cost:.4f} (anchor's "
                             f"{anchor_cost:.4f})")):
                return
            self.anchored.append(self.measured[-1])

    def _solve_anchored(self, search: SearchAPI, base: Plan, offered: list[OfferedKnob], groups: list[Group],
                        base_ms: float, has_table: bool, anchor: CandidateRecord, anchor_predicted: float,
                        target: float) -> tuple[Plan, Any, float]:
        """The anchored solution and its corrected prediction. The table's error (measured / predicted) is known
        at a few plans: the anchor, the uncompressed model and every anchored solution measured so far; a plan
        gets the error interpolated (piecewise linearly in its raw prediction) between the nearest of them,
        re-solved until that settles. One factor for all is wrong either way: on a 0.76 ms ResNet the anchor ran
        0.8x its prediction and the nearly uncompressed re-chosen plan 1.03x (the anchor's factor put it over the
        budget); on FashionResNet the anchor (every block removed) ran 0.6x, the baseline 1.4x, and a solution
        with two blocks back 1.55x, so the next round has to know that."""
        points = {anchor_predicted: (search.latency_of(anchor) or 0.0) / anchor_predicted,
                  base_ms: search.baseline_ms / base_ms}
        for record in self.anchored:
            raw, measured = search.predict(record.plan), search.latency_of(record)
            if raw and measured:
                points[raw] = measured / raw
        known = sorted(points.items())

        def factor_at(raw_ms: float) -> float:
            if raw_ms <= known[0][0]:
                return known[0][1]
            for (x0, f0), (x1, f1) in itertools.pairwise(known):
                if raw_ms <= x1:
                    return f0 + (f1 - f0) * (raw_ms - x0) / (x1 - x0)
            return known[-1][1]

        factor = points[anchor_predicted]
        for _ in range(6):
            plan, allocation, predicted = self._solve(search, base, offered, groups, base_ms, 0.0, factor,
                                                      has_table, target_ms=target)
            raw = predicted / factor
            settled = factor_at(raw)
            if abs(settled - factor) <= 0.02 * factor:
                break
            factor = settled
        return plan, allocation, raw * factor_at(raw)

    def _measure_noted(self, search: SearchAPI, plan: Plan, note: str, purpose: str) -> bool:
        """Measure one extra solution, saying why in the notes; False when the trials ran out."""
        self.tried.add(repr(plan))
        search.note(note)
        try:
            self.measured.append(search.measure(plan, purpose=purpose))
        except TrialsExhausted:
            return False
        return True

    def _margin_round(self, search: SearchAPI, base: Plan, offered: list[OfferedKnob], drops: dict[tuple, float],
                      has_table: bool, recipe_ms: dict[str, float]) -> None:
        """One more solution, aimed :data:`VERIFY_MARGIN` under the budget, when the most accurate in-budget
        candidate measured closer to the budget than that (the one verification tries first)."""
        best = self._best_in_budget(search)
        if best is None or search.trials_left() <= 0 or search.time_left() == 0.0:
            return
        target = (1.0 - VERIFY_MARGIN) * search.budget_ms
        if (search.latency_of(best) or 0.0) <= target:
            return
        groups, base_ms = build_groups(search, base, offered, drops, has_table, recipe_ms)
        slack, factor = self.correction
        plan, allocation, predicted = self._solve(search, base, offered, groups, base_ms, slack, factor, has_table,
                                                  target_ms=target)
        if (repr(plan) in self.tried or not allocation.feasible
                or self._hopeless(search, allocation.predicted_cost, "margin round", within_ms=target)):
            return
        self._measure_noted(
            search, plan,
            note=(f"margin round: the best in-budget candidate measured {search.latency_of(best):.3f} ms, within "
                  f"{VERIFY_MARGIN:.0%} under the {search.budget_ms:.3f} ms budget; one solution aimed at "
                  f"{target:.3f} ms measured too, for verification to fall back on"),
            purpose=(f"knapsack: margin round, aimed at {target:.3f} ms, predicted {predicted:.3f} ms, predicted "
                     f"drop {allocation.predicted_cost:.4f}"))

    def _solve(self, search: SearchAPI, base: Plan, offered: list[OfferedKnob], groups: list[Group], base_ms: float,
               slack: float, factor: float, has_table: bool, target_ms: float | None = None
               ) -> tuple[Plan, Any, float]:
        """The allocation for this slack, tightened (without measuring) until the table's prediction of the
        whole plan (times ``factor``), not just the sum of its parts, is within the budget (``target_ms`` when
        given). Returns the plan, the allocation and the plan's corrected prediction in ms."""
        budget = (target_ms or search.budget_ms) / factor  # in the table's own units
        # a layer inside a block (``layer2.1.conv1`` in ``layer2.1``): the block's removal takes the layer with
        # it, so the two are never chosen together (their savings would be counted twice)
        nested = [(outer.name, inner.name) for outer in groups for inner in groups
                  if outer.layer and inner.layer and inner.layer.startswith(outer.layer + ".")]
        for _ in range(6):
            allocation = solve(groups, budget - base_ms + slack, exclusive=nested)
            plan = base
            for group in groups:
                for knob, level in allocation.choice[group.name].decisions.items():
                    plan = set_knob(plan, group.layer, knob, level, off_level(offered, group.layer, knob))
            predicted = (search.predict(plan) if has_table else None) or base_ms + allocation.predicted_delta_ms
            if not has_table or predicted <= budget or not allocation.feasible:
                return plan, allocation, predicted * factor
            slack += budget - predicted
        return plan, allocation, predicted * factor

@hookimpl
def edgeslim_register_strategies(register):
    register(KnapsackAllocation)
