"""What every strategy may want first, written once against :class:`~edgeslim.strategy.SearchAPI`: settings
that change accuracy only, the one-line uniform recipes a user would try by hand (uniform INT8, uniform channel
pruning at each level, every block removed...), and the one-shot sensitivity of single moves. The speed gate lives
in :mod:`edgeslim.speed_gate`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from edgeslim.plan import Plan, set_knob, uniform, with_model
from edgeslim.strategy import OfferedKnob, SearchAPI
from edgeslim.technique import Knob


def best_accuracy_variants(search: SearchAPI, base: Plan, dropped: set[str]) -> Plan:
    """Settings that change accuracy only (INT8 calibration): each scored on the host, uniformly; the best kept."""
    for found in search.accuracy_variants():
        if found.technique in dropped:
            continue
        # its own phase: entropy calibration of a large model takes minutes, which the terminal should show
        search.phase(f"{found.technique}: accuracy-only settings (uniform, scored on the host)", len(found.variants))
        probe = uniform(base, found.knobs)
        scored = []
        for i, variant in enumerate(found.variants):
            scored.append((search.metric_drop(search.score(with_model(probe, variant),
                                                                    purpose=f"{found.technique}: setting")), i))
            search.progress(", ".join(f"{k}={v}" for k, v in variant.items()))
        _, best = min(scored)
        base = with_model(base, found.variants[best])
        search.note(f"{found.technique}: {found.variants[best]} kept (uniform, scored on the host: "
                    + ", ".join(f"{list(found.variants[i].values())[0]} {-d:+.4f}" for d, i in scored) + ")")
    return base


@dataclass(frozen=True)
class Recipe:
    """A one-line recipe (every layer offering a knob at one level, INT8 on top or not). Recipes of one
    ``family`` come in order of increasing compression: the first that meets the budget is the family's best."""

    label: str
    plan: Plan
    family: str
    #: the speed gate's techniques alone (uniform INT8): no recovery to pay, seconds to build
    post_training: bool = False
    #: the latency knob the family varies, shared with its INT8 sibling family ("sparsity" for "sparsity" and
    #: "sparsity + quantization"), and the level index: a sibling at the same level is the same architecture
    knob: str = ""
    level: int = 0


def uniform_recipes(search: SearchAPI, base: Plan, dropped: set[str]) -> list[Recipe]:
    """Every per-layer latency knob at each of its levels on all layers that offer it, alone and with the speed
    gate's techniques (INT8) on every layer too; and the gated techniques alone. What a user tries by hand."""
    by_knob: dict[tuple[str, str], list[Knob]] = {}
    for offered in search.knobs():
        if offered.reduces_latency and offered.knob.layer is not None and offered.owner not in dropped:
            by_knob.setdefault((offered.owner, offered.knob.name), []).append(offered.knob)
    gated = {g.technique: g.knobs for g in search.speed_gates() if g.technique not in dropped}
    gated_plan = base
    for knobs in gated.values():
        gated_plan = uniform(gated_plan, knobs)
    recipes = [Recipe(f"uniform {name}", uniform(base, knobs), name, post_training=True)
               for name, knobs in gated.items()]
    # the target's own precision modes and other model-wide latency knobs, each level alone and with INT8
    for offered in search.knobs():
        knob = offered.knob
        if knob.layer is None and offered.reduces_latency and offered.owner not in dropped:
            for level in knob.levels[1:]:
                recipes.append(Recipe(f"{knob.name}={level}", set_knob(base, None, knob.name, level, knob.levels[0]),
                                      knob.name, knob=knob.name, level=knob.levels.index(level)))
                if gated:
                    recipes.append(Recipe(f"{knob.name}={level} + {'+'.join(gated)}",
                                          set_knob(gated_plan, None, knob.name, level, knob.levels[0]),
                                          f"{knob.name} + {'+'.join(gated)}", knob=knob.name,
                                          level=knob.levels.index(level)))
    for (owner, name), knobs in by_knob.items():
        if owner in gated:
            continue
        for index in range(1, max(len(k.levels) for k in knobs)):
            level = knobs[0].levels[index] if index < len(knobs[0].levels) else index
            recipes.append(Recipe(f"uniform {name}={level}", uniform(base, knobs, index), name, knob=name, level=index))
            if gated:
                recipes.append(Recipe(f"uniform {name}={level} + {'+'.join(gated)}",
                                      uniform(gated_plan, knobs, index), f"{name} + {'+'.join(gated)}", knob=name,
                                      level=index))
    return recipes


#: a family's next shallower level that missed the budget by at most this share of it is measured beside the
#: family's stop, for verification to judge side by side: one timing on this shared machine is up to 4% from its
#: side-by-side median (the device against itself in the 16-budget runs: p90 1.6-2.6%, max 3.7%), and a ratio
#: budget moves with the baseline's median as the search goes. ResNet-18-style ONNX Runtime 0.2x timed 25% channels
#: + INT8 at 0.512-0.516 ms against a budget of 0.50-0.51 ms in its first minutes; the budget ended at 0.524 ms,
#: the walk had gone on to 50%, and the answer was 0.52 points below the 25% recipe
NEAR_MISS = 0.05


def walk_family(search: SearchAPI, recipes: list[Recipe], meets: Callable[[Recipe], bool],
                timed: dict[str, float]) -> tuple[Recipe, Recipe | None]:
    """A family's stop: its least compressed level that meets the budget (``meets`` times it into ``timed``, a
    build without recovery), from the table's guess, then shallower levels while they meet it or deeper ones
    until one does; none: the fastest timed (FashionResNet + INT8, ORT, AMX CPU: 75% channels 0.20 ms, 25%
    0.18). And the level just shallower than the stop when it was timed within :data:`NEAR_MISS` over the
    budget (else None)."""
    predicted = [search.predict(r.plan) for r in recipes]
    index = next((i for i, ms in enumerate(predicted) if ms is not None and ms <= search.budget_ms), 0)
    verdict = meets(recipes[index])
    chosen, met = index, verdict
    step = -1 if verdict else 1  # met: a shallower level may too; missed: go deeper
    while 0 <= index + step < len(recipes) and search.time_left() != 0.0:
        index += step
        now = meets(recipes[index])
        if verdict and not now:
            break  # the previous (deeper) level is the least compressed that meets it
        chosen = index
        if now and not verdict:
            met = True
            break  # the first level that meets it, going deeper
    if not met:
        if timed:
            chosen = min(range(len(recipes)), key=lambda i: timed.get(recipes[i].label, math.inf))
        return recipes[chosen], None
    shallower = recipes[chosen - 1] if chosen > 0 else None
    near = shallower is not None and timed.get(shallower.label, math.inf) <= (1.0 + NEAR_MISS) * search.budget_ms
    return recipes[chosen], shallower if near else None


def measuring_order(stops: list[Recipe], one_shot_drop: Callable[[Recipe], float], timed: dict[str, float],
                    budget_ms: float, near: Iterable[Recipe] = ()) -> tuple[list[Recipe], int]:
    """The order in which the families' stops are measured when the clock may not allow them all (each pays a
    recovery), and how many of its first stops are measured even past the recipes' time share. Post-training ones
    first (seconds to build, what a user tries first). Then one stop per knob among those whose latency in ``timed``
    ({label: ms}) meets ``budget_ms``, knobs in order of their best one-shot score, each followed by its INT8
    sibling when that is the same architecture (its recovery reused: seconds): these are the recipes the answer must
    match, so they are the ones always measured, and so are the ``near`` misses next to them (:data:`NEAR_MISS`);
    when none meets it, the fastest stop is (MobileNetV2-style on OpenVINO at 0.3x on a busy machine: the walks timed
    17 architectures all over the budget of their moment, only uniform INT8 was measured, and the 75% channels
    recipe that met the budget side by side was never a candidate).
    Then one stop per knob among the rest (the fastest of a family that never meets the budget: it only calibrates
    the one-shot costs, unless a quieter moment has it meet the budget), nearest the budget first, then the rest.
    One-shot scores rank well within a knob and badly across
    knobs: removing every block of a MobileNetV2-style model scores 7.9% untrained and was the best recipe after
    distillation, yet ranked last and was not measured before the share ran out, twice; at 300 s a stop 3x over the
    budget (low rank) was measured in its place and the search answered 1.6 points below that recipe."""
    def meets(recipe: Recipe) -> bool:
        return timed.get(recipe.label, math.inf) <= budget_ms

    # those that meet it by one-shot score (which of them the answer must beat); those that miss, nearest first (the
    # likeliest to meet it side by side; scoring them would only spend the clock)
    ranked = sorted((r for r in stops if not r.post_training),
                    key=lambda r: (False, one_shot_drop(r)) if meets(r) else (True, timed.get(r.label, math.inf)))
    order = [r for r in stops if r.post_training]

    def by_knob(candidates: list[Recipe]) -> None:
        for i, leader in enumerate(candidates):
            if leader not in order and all(leader.knob != q.knob for q in candidates[:i]):
                order.extend([leader] + [r for r in ranked if r not in order and r is not leader
                                         and r.knob == leader.knob and r.level == leader.level])

    # none meets it at the moment it was timed: the fastest stop (and its INT8 sibling) is the recipes' nearest
    # thing to an answer, and is measured too
    fastest = sorted((r for r in ranked if r.label in timed), key=lambda r: timed[r.label])[:1]
    by_knob([r for r in ranked if meets(r)] or fastest)
    order.extend(r for r in near if r not in order)
    must = len(order)
    by_knob(ranked)
    return order + [r for r in ranked if r not in order], must


#: of the ``--time-budget`` left when the sensitivity phase starts, the most it may use: scores only rank moves,
#: the measured candidates after it are the answer, so they keep the rest
SENSITIVITY_TIME_SHARE = 0.5


def scoring_order(offered: list[OfferedKnob]) -> list[OfferedKnob]:
    """``offered`` in the order the sensitivity phase scores it, so that any prefix (what a spent time share
    leaves) covers every knob family across the whole depth of the network: the families taken in turn, and
    within each the layers in bisection order (first, middle, quarters, ...). Offered order is one family after
    another, layer by layer: cut at half its time on a MobileNetV2-style model, it had scored channel pruning on
    the first 43 of 44 layers and neither INT8 nor block removal anywhere, and the integer program, which must
    treat an unscored move as a last resort, never measured a round."""
    families: dict[str, list[OfferedKnob]] = {}
    for o in offered:
        families.setdefault(o.knob.name, []).append(o)

    def bisection(n: int) -> list[int]:
        bits = max(1, (n - 1).bit_length())
        return sorted(range(n), key=lambda i: int(format(i, f"0{bits}b")[::-1], 2))

    queues = [[knobs[i] for i in bisection(len(knobs))] for knobs in families.values()]
    return [queue[i] for i in range(max(map(len, queues), default=0)) for queue in queues if i < len(queue)]


def sensitivities(search: SearchAPI, base: Plan, offered: list[OfferedKnob], one_shot: bool = False
                  ) -> list[tuple[OfferedKnob, Any, float]]:
    """(knob, level, metric drop) of every single move (one layer, one knob, one level) scored on the host, in
    :func:`scoring_order`; a deeper level never costs less than a shallower one of the same knob. Under
    ``--time-budget`` it stops once it has used :data:`SENSITIVITY_TIME_SHARE` of the time left at its start,
    and says how many knobs it left unscored."""
    found = []
    left = search.time_left()
    keep = None if left is None else left * (1.0 - SENSITIVITY_TIME_SHARE)
    ordered = scoring_order(offered)
    for done, o in enumerate(ordered):
        knob, floor = o.knob, 0.0
        if keep is not None and (search.time_left() or 0.0) <= keep:
            search.note(f"--time-budget: the sensitivity phase used its share ({SENSITIVITY_TIME_SHARE:.0%} of the "
                        f"{left:.0f} s left when it started) after {done} of {len(ordered)} knobs (every family, "
                        "spread over the layers); the rest are not scored" if left else
                        "--time-budget spent before the sensitivity phase: no per-layer move is scored")
            break
        for level in knob.levels[1:]:
            record = search.score(set_knob(base, knob.layer, knob.name, level, knob.levels[0]), one_shot=one_shot,
                                  short_recovery=True)
            search.progress(f"{knob.layer or 'model'} {knob.name}={level}")
            floor = max(floor, search.metric_drop(record))
            found.append((o, level, floor))
    return found
