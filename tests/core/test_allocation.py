"""The allocation integer program (scipy's HiGHS): one option per group, least cost within the latency limit."""

from edgeslim.allocation import Group, Option, solve, stdout_to_stderr


def groups() -> list[Group]:
    return [Group("a", "a", [Option({}, 0.0, 0.0), Option({"s": 0.5}, 0.01, -2.0), Option({"s": 0.75}, 0.05, -3.0)]),
            Group("b", "b", [Option({}, 0.0, 0.0), Option({"s": 0.5}, 0.001, -1.0)])]


def test_the_cheapest_combination_within_the_limit_is_chosen():
    allocation = solve(groups(), -2.5)
    assert {name: o.decisions for name, o in allocation.choice.items()} == {"a": {"s": 0.5}, "b": {"s": 0.5}}


def test_a_loose_limit_changes_nothing():
    allocation = solve(groups(), 0.0)
    assert (allocation.predicted_cost, allocation.feasible) == (0.0, True)


def test_an_impossible_limit_gives_the_fastest_combination_marked_infeasible():
    allocation = solve(groups(), -10.0)
    assert (allocation.predicted_delta_ms, allocation.feasible) == (-4.0, False)


def test_one_option_per_group_even_when_two_would_be_cheaper():
    two = [Group("a", "a", [Option({}, 0.0, 0.0), Option({"x": 1}, 0.1, -1.0), Option({"x": 2}, 0.1, -1.0)])]
    assert len(solve(two, -1.0).choice) == 1


def test_what_the_solver_prints_to_stdout_goes_to_stderr(capfd):
    """HiGHS writes debug lines to file descriptor 1 from C++; with --json stdout must hold the manifest alone."""
    import os

    with stdout_to_stderr():
        os.write(1, b"HighsMipSolverData::transformNewIntegerFeasibleSolution tmpSolver.run();\n")
    out, err = capfd.readouterr()
    assert (out, "tmpSolver" in err) == ("", True)


def test_a_block_and_a_layer_inside_it_are_never_both_changed():
    """Removing block "b" and cutting "b.conv" would save 1.6 ms at cost 0.6 if savings added up; they do not
    (the cut layer is gone with its block), so the cheapest fit is the removal with another layer's cut."""
    nested = [Group("b", "b", [Option({}, 0.0, 0.0), Option({"remove": True}, 0.5, -1.0)]),
              Group("b.conv", "b.conv", [Option({}, 0.0, 0.0), Option({"s": 0.5}, 0.1, -0.6)]),
              Group("c", "c", [Option({}, 0.0, 0.0), Option({"s": 0.5}, 0.3, -0.5)])]
    allocation = solve(nested, -1.5, exclusive=[("b", "b.conv")])
    assert {name: o.decisions for name, o in allocation.choice.items() if o.decisions} == {
        "b": {"remove": True}, "c": {"s": 0.5}}


def offered_knobs() -> list:
    """A MobileNetV2-like offer: channels and INT8 on 8 layers (in that order, family after family), removal of
    2 blocks."""
    from edgeslim.strategy import OfferedKnob
    from edgeslim.technique import Knob

    layers = [f"features.{i}" for i in range(8)]
    return ([OfferedKnob("pruning", Knob("pruning", "sparsity", layer, (0.0, 0.5, 0.75))) for layer in layers]
            + [OfferedKnob("quantization", Knob("quantization", "bits", layer, (32, 8))) for layer in layers]
            + [OfferedKnob("layer_pruning", Knob("layer_pruning", "remove", b, (False, True)))
               for b in ("features.3", "features.6")])


def test_a_cut_short_sensitivity_phase_has_scored_every_family_across_the_depth():
    """The first 6 knobs scored (a spent time share) are 2 of each family, and channels and INT8 each on the
    first layer and one in the second half: offered order would have given channels on features.0-5 only."""
    from edgeslim.recipes import scoring_order

    first = [(o.knob.name, int(o.knob.layer.split(".")[1])) for o in scoring_order(offered_knobs())[:6]]
    families = sorted({name for name, _ in first})
    deepest = {name: max(i for n, i in first if n == name) for name in ("sparsity", "bits")}
    assert (families, len(first), min(deepest.values()) >= 4) == (["bits", "remove", "sparsity"], 6, True)


def test_every_offered_knob_is_scored_once_when_time_allows():
    from edgeslim.recipes import scoring_order

    offered = offered_knobs()
    assert sorted(map(id, scoring_order(offered))) == sorted(map(id, offered))


def test_an_unscored_move_costs_an_upper_quantile_of_the_same_move_elsewhere_and_never_less_when_deeper():
    from edgeslim.allocation_groups import impute_unscored

    drops = {(f"features.{i}", "sparsity", 0.5): 0.01 * i for i in range(5)}
    drops |= {(f"features.{i}", "sparsity", 0.75): 0.02 * i + 0.05 for i in range(5)}
    imputed = impute_unscored(drops, offered_knobs())
    half, most = drops[("features.7", "sparsity", 0.5)], drops[("features.7", "sparsity", 0.75)]
    # 3 layers x 2 levels imputed; nothing for INT8 or removal, which no layer scored
    assert (imputed, half, most, ("features.7", "bits", 8) in drops) == (6, 0.03, 0.11, False)


def test_a_plans_predicted_loss_sums_its_moves_beyond_the_base_and_is_infinite_with_an_unscored_one():
    import math

    from edgeslim.allocation_groups import plan_loss

    offered = offered_knobs()
    drops = {("features.1", "sparsity", 0.5): 0.02, ("features.3", "remove", True): 0.3,
             ("features.2", "bits", 8): 0.001}
    base = {"layers": {"features.2": {"bits": 8}}, "model": {"int8_scheme": "u8s8"}}
    plan = {"layers": {"features.1": {"sparsity": 0.5}, "features.2": {"bits": 8}, "features.3": {"remove": True},
                       "features.4": {"sparsity": 0.0}}, "model": {"int8_scheme": "u8s8"}}
    unscored = {**plan, "layers": {**plan["layers"], "features.5": {"sparsity": 0.75}}}
    assert (round(plan_loss(plan, base, offered, drops), 6), plan_loss(unscored, base, offered, drops)) == (
        0.32, math.inf)


def one_shot_costs() -> dict[tuple, float]:
    """Per layer: channels 0.01 at half, 0.03 at three quarters; INT8 0.0005; each block's removal 0.4."""
    drops = {(f"features.{i}", "sparsity", 0.5): 0.01 for i in range(8)}
    drops |= {(f"features.{i}", "sparsity", 0.75): 0.03 for i in range(8)}
    drops |= {(f"features.{i}", "bits", 8): 0.0005 for i in range(8)}
    return drops | {(b, "remove", True): 0.4 for b in ("features.3", "features.6")}


def uniform_plan(**knobs) -> dict:
    layers = [f"features.{i}" for i in range(8)]
    plan: dict = {"layers": {}, "model": {}}
    for name, level in knobs.items():
        for layer in (("features.3", "features.6") if name == "remove" else layers):
            plan["layers"].setdefault(layer, {})[name] = level
    return plan


def test_a_knob_levels_one_shot_costs_are_scaled_by_what_its_measured_recipe_lost_over_their_sum():
    """Blocks: 0.8 predicted, lossless measured (the floor, 0.002, over 0.8). Channels at half with INT8: 0.03
    measured, less INT8's 0.004 (too small to calibrate by itself), over 0.08 predicted. Uniform INT8 alone
    predicted 0.004: no factor."""
    from edgeslim.allocation_groups import calibrate_to_recipes

    recipes = [(uniform_plan(bits=8), 0.003), (uniform_plan(remove=True), -0.01),
               (uniform_plan(sparsity=0.5, bits=8), 0.03)]
    scaled, factors = calibrate_to_recipes(one_shot_costs(), offered_knobs(), {"layers": {}, "model": {}}, recipes)
    picked = [scaled[("features.3", "remove", True)], scaled[("features.1", "sparsity", 0.5)],
              scaled[("features.1", "sparsity", 0.75)], scaled[("features.1", "bits", 8)]]
    assert ([round(c, 6) for c in picked], sorted(factors, key=str)) == (
        [0.001, 0.00325, 0.03, 0.0005], [("remove", True), ("sparsity", 0.5)])


def test_a_calibrated_deeper_level_never_costs_less_than_the_uncalibrated_shallower_one():
    """Three quarters of the channels measured at 0.012 (factor 0.05: 0.0015 a layer); half was not measured
    and keeps its one-shot 0.01, so three quarters costs at least that."""
    from edgeslim.allocation_groups import calibrate_to_recipes

    scaled, _ = calibrate_to_recipes(one_shot_costs(), offered_knobs(), {"layers": {}, "model": {}},
                                     [(uniform_plan(sparsity=0.75), 0.012)])
    assert round(scaled[("features.5", "sparsity", 0.75)], 6) == 0.01
