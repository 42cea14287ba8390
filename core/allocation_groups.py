"""The integer program's groups, built from a search (``edgeslim.allocation`` solves them): per layer, every
combination of its knobs' levels with a predicted accuracy cost (one-shot sensitivities summed) and a predicted
latency change (the device's latency table, or without one each layer's share of what the uniform recipe of
that level saved, as measured); per model-wide knob, one group each. Built-in strategies use it; so may any
third-party strategy.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

from edgeslim.allocation import Group, Option
from edgeslim.plan import Plan, set_knob
from edgeslim.strategy import OfferedKnob, SearchAPI

#: a layer's options are the combinations of its knobs' levels, at most this many (the rest: single knobs)
MAX_OPTIONS_PER_LAYER = 64


def build_groups(search: SearchAPI, base: Plan, offered: list[OfferedKnob], drops: dict[tuple, float],
                 has_table: bool, recipe_ms: dict[str, float]) -> tuple[list[Group], float]:
    """One group per layer (its knobs' level combinations) and per model-wide knob, with predicted costs
    and latency changes; and the base plan's predicted latency."""
    by_layer: dict[str | None, list[OfferedKnob]] = {}
    for o in offered:
        by_layer.setdefault(o.knob.layer, []).append(o)
    base_ms = (search.predict(base) if has_table else None) or search.baseline_ms
    per_layer_share = _measured_shares(search, offered, recipe_ms)
    groups = []
    for layer, knobs in by_layer.items():
        singles = [[(o.knob.name, lv) for lv in o.knob.levels[1:]] for o in knobs]
        if layer is None:  # model-wide knobs: one group each
            for o, levels in zip(knobs, singles, strict=True):
                groups.append(Group(f"model:{o.knob.name}", None, [Option({}, 0.0, 0.0)] + [
                    _option(search, base, None, [pair], drops, has_table, base_ms, per_layer_share)
                    for pair in levels]))
            continue
        combos = [c for r in range(1, len(singles) + 1) for subset in itertools.combinations(singles, r)
                  for c in itertools.product(*subset)]
        if len(combos) > MAX_OPTIONS_PER_LAYER:
            combos = [(pair,) for levels in singles for pair in levels]
        groups.append(Group(layer, layer, [Option({}, 0.0, 0.0)] + [
            _option(search, base, layer, list(combo), drops, has_table, base_ms, per_layer_share)
            for combo in combos]))
    return groups, base_ms


def _option(search: SearchAPI, base: Plan, layer: str | None, pairs: list[tuple[str, Any]], drops: dict[tuple, float],
            has_table: bool, base_ms: float, shares: dict[tuple[str, Any], float]) -> Option:
    cost = sum(drops.get((layer, name, level), math.inf) for name, level in pairs)
    if has_table:
        plan = base
        for name, level in pairs:
            plan = set_knob(plan, layer, name, level, None)
        # the layer's own change: a float-INT8 boundary it makes depends on its neighbours' choices, which the
        # whole solution's prediction accounts for (``_solve`` tightens until that fits)
        delta = (search.predict_separable(plan) or base_ms) - base_ms
    else:
        delta = sum(shares.get((name, level), 0.0) for name, level in pairs)
    return Option(dict(pairs), cost if math.isfinite(cost) else 1e6, delta)


def _measured_shares(search: SearchAPI, offered: list[OfferedKnob], recipe_ms: dict[str, float]
                     ) -> dict[tuple[str, Any], float]:
    """Without a latency table: each layer's share of what the uniform recipe of that knob level saved, as
    measured (equal shares: crude, corrected by the rounds' measurements)."""
    counts: dict[str, int] = {}
    for o in offered:
        if o.knob.layer is not None:
            counts[o.knob.name] = counts.get(o.knob.name, 0) + 1
    shares = {}
    for o in offered:
        for level in o.knob.levels[1:]:
            ms = recipe_ms.get(f"uniform {o.knob.name}={level}")
            if ms is not None:
                shares[(o.knob.name, level)] = (ms - search.baseline_ms) / max(1, counts.get(o.knob.name, 1))
    return shares


def lighter_than(groups: list[Group], anchor: Plan, offered: list[OfferedKnob]) -> tuple[list[Group], float]:
    """Each group cut to the options no deeper than ``anchor`` sets it: per knob, absent or at a level no further
    along the knob's levels than the anchor's (a layer the anchor leaves alone keeps only "as it is"); and the
    anchor's own predicted cost (one-shot losses summed over the groups, its own options)."""
    order = {(o.knob.layer, o.knob.name): list(o.knob.levels) for o in offered}

    def depth(layer: str | None, knob: str, level: Any) -> int:
        levels = order.get((layer, knob), [])
        return levels.index(level) if level in levels else 0

    cut: list[Group] = []
    anchor_cost = 0.0
    for group in groups:
        if group.layer is None:
            knob = group.name.removeprefix("model:")
            asked = {knob: anchor.get("model", {})[knob]} if knob in anchor.get("model", {}) else {}
        else:
            asked = {k: v for k, v in anchor.get("layers", {}).get(group.layer, {}).items()
                     if (group.layer, k) in order and depth(group.layer, k, v) > 0}
        options = [o for o in group.options
                   if all(k in asked and depth(group.layer, k, v) <= depth(group.layer, k, asked[k])
                          for k, v in o.decisions.items())]
        own = next((o for o in options if o.decisions == asked), None)
        anchor_cost += own.cost if own is not None else 0.0
        cut.append(Group(group.name, group.layer, options))
    return cut, anchor_cost


def off_level(offered: list[OfferedKnob], layer: str | None, name: str) -> Any:
    """The level of ``layer``'s knob ``name`` that means "not applied" (its first), None if not offered."""
    return next((o.knob.levels[0] for o in offered if o.knob.layer == layer and o.knob.name == name), None)


#: an unscored move's cost is this quantile of what the same knob at the same level cost on the layers scored:
#: above the middle, so the program prefers the moves it knows, without ruling the others out
IMPUTED_QUANTILE = 0.75


def impute_unscored(drops: dict[tuple, float], offered: list[OfferedKnob]) -> int:
    """Give each per-layer move the sensitivity phase did not score (its time share ran out) a cost from the
    same knob and level on the layers it did score (:data:`IMPUTED_QUANTILE`), in place; returns how many. A
    cost is a per-layer quantile of costs that rise with the level, so an imputed deeper level never costs
    less. Without it such a move costs 1e6: a program that needs it to meet the budget predicts a loss no
    round is measured at (a MobileNetV2-style model: predicted 2000000.7, so no integer-program round ran)."""
    scored: dict[tuple[str, Any], list[float]] = {}
    for (layer, name, level), drop in drops.items():
        if layer is not None:
            scored.setdefault((name, level), []).append(drop)
    quantile = {move: sorted(costs)[round(IMPUTED_QUANTILE * (len(costs) - 1))] for move, costs in scored.items()}
    imputed = 0
    for o in offered:
        for level in o.knob.levels[1:]:
            key = (o.knob.layer, o.knob.name, level)
            if o.knob.layer is None or key in drops or (o.knob.name, level) not in quantile:
                continue
            drops[key] = quantile[(o.knob.name, level)]
            imputed += 1
    return imputed


def loss_by_move(plan: Plan, base: Plan, offered: list[OfferedKnob], drops: dict[tuple, float]
                 ) -> dict[tuple[str, Any], float]:
    """The one-shot losses of ``plan``'s moves beyond ``base``, summed per (knob, level): infinite for a pair
    with a move that was not scored."""
    losses: dict[tuple[str, Any], float] = {}
    for layer, knobs in [(None, plan.get("model", {})), *plan.get("layers", {}).items()]:
        before = base.get("model", {}) if layer is None else base.get("layers", {}).get(layer, {})
        for name, level in knobs.items():
            if before.get(name) != level and level != off_level(offered, layer, name):
                losses[(name, level)] = losses.get((name, level), 0.0) + drops.get((layer, name, level), math.inf)
    return losses


def plan_loss(plan: Plan, base: Plan, offered: list[OfferedKnob], drops: dict[tuple, float]) -> float:
    """The accuracy loss the integer program would predict for ``plan``: the one-shot losses of its moves beyond
    ``base``, summed (infinite when one was not scored). Compared with a measured loss it says how far the
    prediction overstates what recovery gets back (removing blocks one-shot costs far more than it does after
    distillation)."""
    return sum(loss_by_move(plan, base, offered, drops).values())


#: a recipe predicted to lose less than this (summed one-shot losses of one knob level) says too little to
#: calibrate that level by: a ratio of two numbers within the scoring noise
CALIBRATION_MIN_PREDICTED = 0.01
#: a measured recipe that lost nothing (or gained: distillation from an under-trained teacher) counts as losing
#: this much, so its knob level's moves stay in their one-shot order among themselves rather than all free
CALIBRATION_FLOOR = 0.002


def calibrate_to_recipes(drops: dict[tuple, float], offered: list[OfferedKnob], base: Plan,
                         recipes: list[tuple[Plan, float]]) -> tuple[dict[tuple, float], dict[tuple[str, Any], float]]:
    """One-shot costs scaled, per knob level, by what the uniform recipes of that level lost when measured (with
    the run's recovery) over what their one-shot costs summed to: the ratio says how much of a one-shot loss
    recovery gets back, which differs by technique. Removing every block of a MobileNetV2-style model summed to
    a 0.78 one-shot loss and measured lossless after distillation, while its channels' one-shot losses held:
    uncalibrated, the program steered clear of the move that won. A recipe of two knob levels calibrates the one
    the other recipes have not, after the other's (calibrated) share is taken off. A level no recipe measured
    keeps its one-shot costs, and per layer a deeper level never costs less than a shallower one. Factors are
    at most 1 (recovery does not lose what one-shot scoring did not). Returns the scaled costs and
    {(knob, level): factor}."""
    predicted = [(loss_by_move(plan, base, offered, drops), measured) for plan, measured in recipes
                 if math.isfinite(measured)]
    factors: dict[tuple[str, Any], float] = {}
    for _ in range(2):  # single-level recipes first, then those whose other level the first pass calibrated
        found: dict[tuple[str, Any], list[float]] = {}
        for losses, measured in predicted:
            unknown = [m for m, loss in losses.items() if m not in factors and loss >= CALIBRATION_MIN_PREDICTED]
            if len(unknown) != 1 or not math.isfinite(losses[unknown[0]]):
                continue
            rest = sum(factors.get(m, 1.0) * loss for m, loss in losses.items() if m != unknown[0])
            found.setdefault(unknown[0], []).append(
                min(1.0, max(measured - rest, CALIBRATION_FLOOR) / losses[unknown[0]]))
        factors |= {move: max(ratios) for move, ratios in found.items()}  # two recipes: the more cautious
    scaled = {key: cost * factors.get((key[1], key[2]), 1.0) for key, cost in drops.items()}
    for o in offered:  # a deeper level never costs less than a shallower one on the same layer
        floor = 0.0
        for level in o.knob.levels[1:]:
            key = (o.knob.layer, o.knob.name, level)
            if key in scaled:
                scaled[key] = floor = max(scaled[key], floor)
    return scaled, factors
