"""Allocation as a constrained optimisation: one option per group (a layer's combination of knob levels, or a
model-wide knob's level), the least predicted accuracy loss whose predicted latency fits the budget.

A multiple-choice knapsack, solved exactly as an integer program with SciPy's HiGHS (``scipy.optimize.milp``),
the formulation HALP (Shen et al., NeurIPS 2022, latency-saliency knapsack over channel groups) uses for channels
and HAWQ-V3 (Yao et al., ICML 2021, an ILP under a latency constraint) for bit-widths. Costs and latency changes
are taken as separable across groups; the caller measures the solution, corrects its latency model and solves
again, so the approximation is checked on the device every round.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Option:
    """One way to set a group: its decisions, predicted accuracy cost and predicted latency change (ms, negative
    = faster). The first option of every group is "leave it as it is" (no decisions, cost 0, change 0)."""

    decisions: dict[str, Any]
    cost: float
    latency_delta_ms: float


@dataclass
class Group:
    """A layer (``layer`` set) or a model-wide knob (``layer`` None), with its options."""

    name: str
    layer: str | None
    options: list[Option] = field(default_factory=list)


@dataclass
class Allocation:
    """The chosen option per group, with the totals the solver saw."""

    choice: dict[str, Option]
    predicted_cost: float
    predicted_delta_ms: float
    feasible: bool


def solve(groups: list[Group], max_delta_ms: float, time_limit_s: float = 10.0,
          exclusive: list[tuple[str, str]] = ()) -> Allocation:
    """The options (one per group) of least total cost whose total latency change is at most ``max_delta_ms``.

    ``exclusive`` names pairs of groups of which at most one may leave its first option ("as it is"): a block
    that is removed and a layer inside it, whose savings would otherwise be counted twice. When nothing fits,
    the fastest combination is returned with ``feasible=False`` (the caller measures it: the table may be
    pessimistic)."""
    from scipy.optimize import Bounds, LinearConstraint, milp

    groups = [g for g in groups if g.options]
    index = [(gi, oi) for gi, g in enumerate(groups) for oi in range(len(g.options))]
    if not index:
        return Allocation({}, 0.0, 0.0, max_delta_ms >= 0)
    cost = np.array([groups[gi].options[oi].cost for gi, oi in index], dtype=float)
    delta = np.array([groups[gi].options[oi].latency_delta_ms for gi, oi in index], dtype=float)
    one_per_group = np.zeros((len(groups), len(index)))
    for column, (gi, _) in enumerate(index):
        one_per_group[gi, column] = 1.0
    constraints = [LinearConstraint(one_per_group, 1.0, 1.0), LinearConstraint(delta[None, :], -np.inf, max_delta_ms)]
    position = {g.name: gi for gi, g in enumerate(groups)}
    pairs = [(position[a], position[b]) for a, b in exclusive if a in position and b in position]
    if pairs:
        at_most_one = np.zeros((len(pairs), len(index)))
        for row, pair in enumerate(pairs):
            for column, (gi, oi) in enumerate(index):
                at_most_one[row, column] = 1.0 if gi in pair and oi > 0 else 0.0
        constraints.append(LinearConstraint(at_most_one, -np.inf, 1.0))
    # among equally costly options (one-shot drops are often zero within the metric's resolution), the one that
    # changes the model least: the least latency bought beyond the limit, hence the least compression
    tie_break = 1e-6 * np.abs(delta) / (np.abs(delta).max() or 1.0)
    with stdout_to_stderr():
        result = milp(cost + tie_break, integrality=np.ones(len(index)), bounds=Bounds(0, 1),
                      constraints=constraints, options={"time_limit": time_limit_s})
    feasible = result.x is not None and result.status in (0, 1)
    x = result.x if feasible else _fastest(groups, index, pairs)
    chosen = {groups[gi].name: groups[gi].options[oi] for (gi, oi), on in zip(index, x, strict=True) if on > 0.5}
    return Allocation(chosen, float(sum(o.cost for o in chosen.values())),
                      float(sum(o.latency_delta_ms for o in chosen.values())), feasible)


@contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """Send what C code writes to file descriptor 1 to 2 meanwhile: HiGHS prints debug lines
    ("HighsMipSolverData::transformNewIntegerFeasibleSolution tmpSolver.run();") straight to stdout, where
    ``edgeslim search --json`` writes its manifest for a program to parse."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def _fastest(groups: list[Group], index: list[tuple[int, int]], pairs: list[tuple[int, int]]) -> np.ndarray:
    best = {gi: min(range(len(g.options)), key=lambda oi, g=g: (g.options[oi].latency_delta_ms, g.options[oi].cost))
            for gi, g in enumerate(groups)}
    for outer, inner in pairs:  # the pair's first group wins (a removed block: what is inside it goes too)
        if best[outer] > 0:
            best[inner] = 0
    return np.array([1.0 if best[gi] == oi else 0.0 for gi, oi in index])
