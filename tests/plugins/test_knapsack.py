"""The knapsack strategy on a model it has never seen: one-shot sensitivity, uniform recipes measured, the
integer program's solution measured, every phase timed in the manifest."""

from __future__ import annotations

import dataclasses
import json
import sqlite3

import pytest

from tests.conftest import run_cli, write_fast_profile


@pytest.fixture(scope="module")
def knapsack_run(tmp_path_factory, resnet_onnx):
    work = tmp_path_factory.mktemp("knapsack")
    profile = write_fast_profile(work)
    out = work / "run"
    # an impossible budget: the outcome (exit 3) is known, every phase still runs
    proc = run_cli("search", resnet_onnx, "--profile", profile, "--strategy", "knapsack", "--budget-ms", "0.0001",
                   "--trials", "8", "--out", out, "--json")
    records = [json.loads(line) for line in (out / "candidates.jsonl").open()] if out.exists() else []
    return proc, records, out


def test_an_impossible_budget_exits_3(knapsack_run):
    proc, _, _ = knapsack_run
    assert proc.returncode == 3, proc.stderr


def test_a_budget_under_the_runtimes_own_cost_per_inference_is_said_to_be_unmeetable(knapsack_run):
    proc, _, _ = knapsack_run
    assert any("No compression can meet it" in note for note in json.loads(proc.stdout)["notes"])


def test_the_exit_message_names_the_runtimes_own_cost_per_inference(knapsack_run):
    proc, _, _ = knapsack_run
    assert "the runtime alone takes" in proc.stderr, proc.stderr


def test_sensitivity_is_scored_one_shot(knapsack_run):
    _, records, _ = knapsack_run
    assert any(r["purpose"].endswith("(one-shot)") and r["metric"] is not None for r in records)


def test_uniform_recipes_are_candidates(knapsack_run):
    _, records, _ = knapsack_run
    assert any(r["purpose"].startswith("recipe: uniform") for r in records)


def test_a_recipe_familys_walk_times_architectures_and_measures_only_where_it_stops(knapsack_run):
    """Latency does not depend on the weights: the walk down each family times builds without recovery, and
    only the level it stops at (here, with an impossible budget, the fastest timed) is recovered and measured."""
    _, records, out = knapsack_run
    with sqlite3.connect(out / "store.sqlite") as db:
        timed = json.loads(db.execute("SELECT value FROM meta WHERE name='latency_only_probes'").fetchone()[0])
    measured = [r for r in records if r["purpose"].startswith("recipe:")]
    assert 0 < len(measured) < len(timed)


def test_the_integer_programs_solution_is_measured(knapsack_run):
    _, records, _ = knapsack_run
    assert any(r["purpose"].startswith("knapsack: round 1") and r["latency"] for r in records)


def test_the_one_shot_costs_are_scaled_by_the_measured_recipes_and_the_notes_say_by_how_much(knapsack_run):
    proc, _, _ = knapsack_run
    notes = json.loads(proc.stdout)["notes"]
    assert any(note.startswith("knapsack: one-shot costs scaled by measured over predicted loss of the recipes: ")
               and " x" in note for note in notes), notes


def test_architectures_timed_by_the_recipe_walks_correct_the_latency_table_too(knapsack_run):
    """Every measured candidate the table describes is a correction point; so is each architecture a recipe
    walk timed (built without recovery), so the table has more points than measured candidates."""
    proc, records, _ = knapsack_run
    correction = json.loads(proc.stdout)["predictor"]["correction"]
    predicted = [r for r in records if (r.get("details") or {}).get("prediction_error") is not None]
    assert correction["candidate_points"] > len(predicted), (correction, len(predicted))


def test_a_measured_recipe_records_its_architectures_earlier_timing_and_the_manifest_the_devices_repeatability(
        knapsack_run):
    proc, records, _ = knapsack_run
    recipes = [r for r in records if r["purpose"].startswith("recipe:") and r["latency"]]
    repeatability = json.loads(proc.stdout)["predictor"]["repeatability"]
    assert (all(r["details"].get("architecture_timed_before_ms") for r in recipes),
            repeatability["n"] >= len(recipes) > 0) == (True, True), (recipes, repeatability)


def test_the_manifest_times_every_phase(knapsack_run):
    proc, _, _ = knapsack_run
    phases = json.loads(proc.stdout)["phases_s"]
    assert {"per-layer sensitivity (one-shot, scored on the host)", "uniform recipes (measured on the target)",
            "allocation (integer program, measured on the target)"} <= set(phases)


def test_both_reports_and_the_terminal_show_the_wall_time_per_phase(knapsack_run):
    _, _, out = knapsack_run
    terminal = " ".join(run_cli("report", out).stdout.split())
    shown = [("uniform recipes (measured on the target)" in text and "wall time" in text)
             for text in ((out / "report.md").read_text(), (out / "report.html").read_text(), terminal)]
    assert shown == [True, True, True]


def test_a_spent_time_budget_stops_measuring_and_says_so(tmp_path, resnet_onnx, fast_profile):
    proc = run_cli("search", resnet_onnx, "--profile", fast_profile, "--strategy", "knapsack", "--budget-ms",
                   "0.0001", "--time-budget", "1", "--out", tmp_path / "run", "--json")
    notes = json.loads(proc.stdout)["notes"]
    assert any("--time-budget 1 s spent" in note for note in notes), notes


def test_a_recipe_that_meets_the_budget_is_measured_even_when_the_table_predicts_it_over(tmp_path, resnet_onnx,
                                                                                          fast_profile):
    """The table only picks where a family's walk starts: a table that predicts every recipe far over a budget
    every model meets still gets each family's least compressed recipe measured (and met)."""
    from edgeslim.config import SearchConfig
    from edgeslim.plugins.knapsack import KnapsackAllocation
    from edgeslim.recipes import uniform_recipes
    from edgeslim.search import SearchSession
    from edgeslim.strategy_view import SessionView

    class PessimisticTable(SessionView):
        def predict(self, plan):
            return 1e9

        def worth_measuring(self, plan):
            return False

    session = SearchSession(SearchConfig(model=str(resnet_onnx), profile=str(fast_profile), budget_ms=1000.0,
                                         out_dir=str(tmp_path / "run"), trials=40))
    session.measure_baseline()
    view = PessimisticTable(session)
    measured = KnapsackAllocation()._recipes(view, {"layers": {}, "model": {}}, set())
    first_of_each_family = {}
    for recipe in uniform_recipes(view, {"layers": {}, "model": {}}, set()):
        first_of_each_family.setdefault(recipe.family, recipe.label)
    assert set(measured) == set(first_of_each_family.values())


def test_the_sensitivity_phase_leaves_half_the_time_left_to_the_measured_phases(tmp_path, resnet_onnx,
                                                                                fast_profile):
    """Under --time-budget the host-only ranking stops once it has used its share of the time left when it
    started; a clock that advances 10 s per look and starts at 100 s left stops it at the fifth knob."""
    from edgeslim.config import SearchConfig
    from edgeslim.recipes import SENSITIVITY_TIME_SHARE, sensitivities
    from edgeslim.search import SearchSession
    from edgeslim.strategy_view import SessionView

    class TenSecondsPerLook(SessionView):
        looks = 0

        def time_left(self):
            self.looks += 1
            return 110.0 - 10.0 * self.looks

    session = SearchSession(SearchConfig(model=str(resnet_onnx), profile=str(fast_profile), budget_ms=1000.0,
                                         out_dir=str(tmp_path / "run")))
    session.measure_baseline()
    view = TenSecondsPerLook(session)
    # one level per knob: the test is about when the phase stops, not about what each level costs
    offered = [dataclasses.replace(o, knob=dataclasses.replace(o.knob, levels=o.knob.levels[:2]))
               for o in view.knobs() if o.knob.layer is not None]
    scored = {(o.knob.layer, o.knob.name) for o, _, _ in sensitivities(view, {"layers": {}, "model": {}}, offered,
                                                                        one_shot=True)}
    assert (SENSITIVITY_TIME_SHARE, len(offered) > 5, len(scored)) == (0.5, True, 4)


def test_under_a_time_budget_the_recipes_that_meet_the_budget_are_measured_and_the_rest_only_within_the_share(
        tmp_path, resnet_onnx, fast_profile):
    """Each recipe measurement pays a recovery: under --time-budget the stops that meet the budget (one per knob,
    each with its INT8 sibling) are measured even past the recipes' share, since the answer must match them; the
    stops that miss it (here every low-rank level, timed 10x over) only calibrate and wait for the share. A clock
    that loses 90 s per measurement from 300 s keeps 150 s: the share alone would stop after two measurements;
    the three stops that meet the budget (uniform INT8, 25% channels and its INT8 sibling) are all measured, and
    then, 30 s left, no low-rank stop."""
    from edgeslim.config import SearchConfig
    from edgeslim.plugins.knapsack import RECIPE_TIME_SHARE, KnapsackAllocation
    from edgeslim.search import SearchSession
    from edgeslim.strategy_view import SessionView

    class NinetySecondsPerMeasurement(SessionView):
        spent = 0.0

        def time_left(self):
            return max(0.0, 300.0 - self.spent)

        def probe_latency(self, plan):
            low_rank = any("rank" in knobs for knobs in plan["layers"].values())
            return 10.0 * self.budget_ms if low_rank else 0.5 * self.budget_ms

        def measure(self, plan, purpose="candidate", counts_as_trial=True):
            self.spent += 90.0
            return super().measure(plan, purpose, counts_as_trial)

    session = SearchSession(SearchConfig(model=str(resnet_onnx), profile=str(fast_profile), budget_ms=1000.0,
                                         out_dir=str(tmp_path / "run"), trials=40))
    session.measure_baseline()
    KnapsackAllocation()._recipes(NinetySecondsPerMeasurement(session), {"layers": {}, "model": {}}, set())
    measured = sorted(r.purpose for r in session.store.all() if r.purpose.startswith("recipe:"))
    assert (RECIPE_TIME_SHARE, measured) == (0.5, ["recipe: uniform quantization", "recipe: uniform sparsity=0.25",
                                                   "recipe: uniform sparsity=0.25 + quantization"])


def test_recipes_are_measured_one_per_knob_first_each_followed_by_its_same_architecture_int8_sibling():
    """One-shot scores rank within a knob, not across knobs (every block removed scores 7.9% untrained and wins
    after distillation): uniform INT8, then each knob's best one-shot stop, knobs by that score, each with its
    INT8 sibling when it is the same architecture (a reused recovery); then the rest. Sorting by one-shot score
    alone measures 50% channels before the removal recipes, which the share then leaves out."""
    from edgeslim.recipes import Recipe, measuring_order

    def recipe(label, knob, level, post_training=False):
        return Recipe(label, {"layers": {}, "model": {}}, label.split("=")[0], post_training, knob, level)

    one_shot_drop = {"uniform INT8": 0.0, "channels=0.25 + INT8": 0.01, "rank=0.25": 0.02, "channels=0.5": 0.10,
                     "rank=0.25 + INT8": 0.50, "remove=True": 0.78, "remove=True + INT8": 0.78}
    stops = [recipe("channels=0.25 + INT8", "channels", 1), recipe("channels=0.5", "channels", 2),
             recipe("rank=0.25", "rank", 1), recipe("rank=0.25 + INT8", "rank", 1),
             recipe("remove=True", "remove", 1), recipe("remove=True + INT8", "remove", 1),
             recipe("uniform INT8", "quantization", 0, post_training=True)]
    order, _ = measuring_order(stops, lambda r: one_shot_drop[r.label], dict.fromkeys(one_shot_drop, 1.0), 1.0)
    assert [r.label for r in order] == ["uniform INT8", "channels=0.25 + INT8", "rank=0.25", "rank=0.25 + INT8",
                                        "remove=True", "remove=True + INT8", "channels=0.5"]


def test_recipes_that_meet_the_budget_come_first_one_per_knob_and_are_the_ones_always_measured():
    """A stop that misses the budget (the fastest of a family that never meets it) cannot be the answer: it only
    calibrates. MobileNetV2-style at 0.3x and 300 s measured low rank at 3x the budget (best one-shot score) in
    place of the removal recipe that won. The stops that meet the budget come first, one per knob with its INT8
    sibling, and are counted as always measured; the ones that miss follow."""
    from edgeslim.recipes import Recipe, measuring_order

    def recipe(label, knob, level, post_training=False):
        return Recipe(label, {"layers": {}, "model": {}}, label.split("=")[0], post_training, knob, level)

    one_shot_drop = {"uniform INT8": 0.0, "rank=0.5": 0.10, "channels=0.5 + INT8": 0.10, "remove=True + INT8": 0.78,
                     "remove=True": 0.78, "channels=0.75": 0.40}
    timed = {"uniform INT8": 0.32, "rank=0.5": 0.60, "channels=0.5 + INT8": 0.19, "remove=True + INT8": 0.18,
             "remove=True": 0.25, "channels=0.75": 0.19}
    stops = [recipe("uniform INT8", "quantization", 0, post_training=True), recipe("rank=0.5", "rank", 2),
             recipe("channels=0.5 + INT8", "channels", 2), recipe("channels=0.75", "channels", 3),
             recipe("remove=True", "remove", 1), recipe("remove=True + INT8", "remove", 1)]
    order, must = measuring_order(stops, lambda r: one_shot_drop[r.label], timed, 0.197)
    assert ([r.label for r in order], must) == (
        ["uniform INT8", "channels=0.5 + INT8", "remove=True + INT8", "remove=True", "rank=0.5", "channels=0.75"], 4)


def test_a_near_miss_is_measured_right_after_the_stops_that_meet_the_budget_and_always():
    from edgeslim.recipes import Recipe, measuring_order

    def recipe(label, knob, level, post_training=False):
        return Recipe(label, {"layers": {}, "model": {}}, label.split("=")[0], post_training, knob, level)

    timed = {"uniform INT8": 0.77, "channels=0.5 + INT8": 0.28, "channels=0.25 + INT8": 0.512, "rank=0.25": 0.9}
    stops = [recipe("uniform INT8", "quantization", 0, post_training=True), recipe("rank=0.25", "rank", 1),
             recipe("channels=0.5 + INT8", "channels", 2)]
    order, must = measuring_order(stops, lambda r: 0.1, timed, 0.505, near=[recipe("channels=0.25 + INT8",
                                                                                    "channels", 1)])
    assert ([r.label for r in order], must) == (
        ["uniform INT8", "channels=0.5 + INT8", "channels=0.25 + INT8", "rank=0.25"], 3)


def test_when_no_stop_meets_the_budget_the_fastest_one_and_its_int8_sibling_are_always_measured():
    """On a busy machine every walk may time its family over the budget of its moment (MobileNetV2-style,
    OpenVINO, 0.3x: 17 architectures timed, only uniform INT8 measured in the share, no answer); the fastest stop
    is then the recipes' nearest thing to an answer, and is measured even past the share, with its INT8 sibling
    (the same architecture). The rest follow nearest the budget first (by timing, not by one-shot score: a miss
    only becomes an answer if it meets the budget side by side)."""
    from edgeslim.recipes import Recipe, measuring_order

    def recipe(label, knob, level, post_training=False):
        return Recipe(label, {"layers": {}, "model": {}}, label.split("=")[0], post_training, knob, level)

    one_shot_drop = {"uniform INT8": 0.0, "rank=0.25": 0.02, "channels=0.75": 0.50, "channels=0.75 + INT8": 0.52,
                     "remove=True": 0.78}
    timed = {"uniform INT8": 0.48, "rank=0.25": 0.39, "channels=0.75": 0.16, "channels=0.75 + INT8": 0.15,
             "remove=True": 0.21}
    stops = [recipe("uniform INT8", "quantization", 0, post_training=True), recipe("rank=0.25", "rank", 1),
             recipe("remove=True", "remove", 1), recipe("channels=0.75", "channels", 3),
             recipe("channels=0.75 + INT8", "channels", 3)]
    order, must = measuring_order(stops, lambda r: one_shot_drop[r.label], timed, 0.137)
    assert ([r.label for r in order], must) == (
        ["uniform INT8", "channels=0.75 + INT8", "channels=0.75", "remove=True", "rank=0.25"], 3)


def knapsack_session(tmp_path, model, profile, budget_ratio: float, trials: int, knob: str | None = None):
    """A session on ``model`` with its baseline measured, its strategy view, the empty plan, the latency-reducing
    knobs it offers (``knob``'s only, when given) and whether the latency table was built for them."""
    from edgeslim.config import SearchConfig
    from edgeslim.search import SearchSession
    from edgeslim.strategy_view import SessionView

    session = SearchSession(SearchConfig(model=str(model), profile=str(profile), budget_ratio=budget_ratio,
                                         out_dir=str(tmp_path / "run"), trials=trials))
    session.measure_baseline()
    view, base = SessionView(session), {"layers": {}, "model": {}}
    offered = [o for o in view.knobs() if o.reduces_latency and knob in (None, o.knob.name)]
    has_table = view.use_latency_table(base, [o.knob for o in offered if o.knob.layer is not None])
    return session, view, base, offered, has_table


def test_a_best_candidate_at_the_edge_of_the_budget_gets_a_solution_aimed_under_it_measured_too(tmp_path,
                                                                                                resnet_onnx,
                                                                                                fast_profile):
    """Verification often finds a candidate measured a few percent under the budget just over it: when the most
    accurate in-budget candidate measured within VERIFY_MARGIN of the budget, the margin round measures one
    more solution, aimed at (1 - VERIFY_MARGIN) of the budget, for verification to fall back on."""
    from edgeslim.plugins.knapsack import VERIFY_MARGIN, KnapsackAllocation
    from edgeslim.records import CandidateRecord

    session, view, base, offered, has_table = knapsack_session(tmp_path, resnet_onnx, fast_profile, 0.6, trials=10)
    strategy = KnapsackAllocation()
    drops = strategy._sensitivity(view, base, offered)
    at_the_edge = 0.98 * view.budget_ms  # what the rounds' best measured, as one measurement said
    strategy.measured = [CandidateRecord.new("edge", base, "knapsack: round 1", "measured", metric=view.baseline.metric,
                                             latency={"status": "ok", "p50_ms": at_the_edge, "p90_ms": at_the_edge})]
    strategy._margin_round(view, base, offered, drops, has_table, {})
    margin = [r for r in session.store.all() if r.purpose.startswith("knapsack: margin round")]
    aimed = float(margin[0].purpose.split("aimed at ")[1].split(" ms")[0])
    assert (len(margin), round(aimed, 3)) == (1, round((1 - VERIFY_MARGIN) * view.budget_ms, 3))


def test_an_in_budget_candidate_with_time_to_spare_gets_its_moves_rechosen_lighter_and_measured(tmp_path, resnet_onnx,
                                                                                                 fast_profile):
    """A measured candidate far under the budget (every layer at 75% channels, under a 0.9x budget) leaves time the
    anchored round spends on accuracy: the integer program over that candidate's own moves, aimed at (1 -
    VERIFY_MARGIN) of the budget, gives a plan no layer of which is deeper than the anchor's, and lighter in one."""
    from edgeslim.plan import uniform
    from edgeslim.plugins.knapsack import KnapsackAllocation

    session, view, base, offered, has_table = knapsack_session(tmp_path, resnet_onnx, fast_profile, 0.9, trials=10,
                                                               knob="sparsity")
    strategy = KnapsackAllocation()
    drops = strategy._sensitivity(view, base, offered)
    deepest = max(len(o.knob.levels) for o in offered) - 1
    anchor = view.measure(uniform(base, [o.knob for o in offered], deepest), purpose="recipe: uniform deepest")
    strategy.measured = [anchor]
    strategy._anchored_rounds(view, base, offered, drops, has_table, {})
    anchored = [r for r in session.store.all() if r.purpose.startswith("knapsack: anchored round")]
    levels = {o.knob.layer: o.knob.levels for o in offered}

    def depth(plan: dict, layer: str) -> int:
        return levels[layer].index(plan["layers"].get(layer, {}).get("sparsity", levels[layer][0]))

    first = anchored[0].plan
    assert (len(anchored) >= 1, all(depth(first, layer) <= depth(anchor.plan, layer) for layer in levels),
            any(depth(first, layer) < depth(anchor.plan, layer) for layer in levels)) == (True, True, True)


def test_a_round_is_held_to_what_the_prediction_says_of_the_best_candidate_not_only_to_its_measured_loss(
        tmp_path, resnet_onnx, fast_profile):
    """The best in-budget candidate has every layer at its deepest channel cut and is as accurate as the original
    after recovery (simulated: its record carries the baseline's score), while one-shot its cuts cost a lot (as
    every block removed did on a MobileNetV2-style model, lossless after distillation). A round predicted to lose
    1.5x that one-shot loss is worth measuring (held to the measured zero it was not); one predicted to lose more
    than HOPELESS_MULTIPLE x it is not."""
    from edgeslim.allocation_groups import plan_loss
    from edgeslim.config import SearchConfig
    from edgeslim.plan import uniform
    from edgeslim.plugins.knapsack import HOPELESS_MULTIPLE, HOPELESS_SLACK, KnapsackAllocation
    from edgeslim.records import CandidateRecord
    from edgeslim.search import SearchSession
    from edgeslim.strategy_view import SessionView

    session = SearchSession(SearchConfig(model=str(resnet_onnx), profile=str(fast_profile), budget_ratio=0.9,
                                         out_dir=str(tmp_path / "run"), trials=10))
    session.measure_baseline()
    view, base = SessionView(session), {"layers": {}, "model": {}}
    offered = [o for o in view.knobs() if o.reduces_latency and o.knob.name == "sparsity"]
    strategy = KnapsackAllocation()
    # ten times what the tiny model's cuts cost one-shot: a large loss, as every block removed was on MobileNetV2
    drops = {move: 10 * drop for move, drop in strategy._sensitivity(view, base, offered).items()}
    strategy.predicting = (base, offered, drops)
    deepest = uniform(base, [o.knob for o in offered], max(len(o.knob.levels) for o in offered) - 1)
    fast = 0.5 * view.budget_ms
    strategy.measured = [CandidateRecord.new("deepest", deepest, "recipe: uniform deepest", "measured",
                                             metric=view.baseline.metric,
                                             latency={"status": "ok", "p50_ms": fast, "p90_ms": fast})]
    own = plan_loss(deepest, base, offered, drops)
    assert (own > HOPELESS_SLACK, strategy._hopeless(view, 1.5 * own, "round 1"),
            strategy._hopeless(view, HOPELESS_MULTIPLE * own + 2 * HOPELESS_SLACK, "round 2")) == (True, False, True)


class _BudgetOnly:
    """Only what a recipe walk asks of the search when the table predicts nothing."""

    budget_ms = 0.162

    def predict(self, plan):
        return None

    def time_left(self):
        return None


def test_when_no_level_meets_the_budget_the_walk_stops_at_the_fastest_timed_not_the_deepest():
    # FashionResNet + INT8 under ONNX Runtime on an AMX CPU: the deeper the channel cut, the slower (2026-12-05)
    stop, _ = _walk_channels({0.25: 0.177, 0.5: 0.189, 0.75: 0.201}, 0.162)
    assert stop == 0.25


def _walk_channels(probe_ms: dict[float, float], budget_ms: float):
    """A channel family walked on these timings ({level: ms}): its stop and near miss, by level."""
    from edgeslim.plan import empty_plan
    from edgeslim.recipes import Recipe, walk_family

    recipes = [Recipe(f"uniform sparsity={level} + quantization", empty_plan(), "sparsity + quantization",
                      knob="sparsity", level=i) for i, level in enumerate(probe_ms, start=1)]
    timed: dict[str, float] = {}

    def meets(recipe):
        timed[recipe.label] = list(probe_ms.values())[recipe.level - 1]
        return timed[recipe.label] <= budget_ms

    search = _BudgetOnly()
    search.budget_ms = budget_ms
    stop, near = walk_family(search, recipes, meets, timed)
    return list(probe_ms)[stop.level - 1], None if near is None else list(probe_ms)[near.level - 1]


def test_a_shallower_level_that_misses_the_budget_by_a_timings_noise_is_measured_beside_the_stop():
    """ResNet-18-style ONNX Runtime 0.2x: 25% channels + INT8 timed 0.512 ms against a budget of 0.505 ms at that
    moment; the budget ended at 0.524 ms and the answer was 0.52 points below that recipe, never measured."""
    assert _walk_channels({0.25: 0.512, 0.5: 0.279, 0.75: 0.222}, 0.505) == (0.5, 0.25)


def test_a_shallower_level_well_over_the_budget_is_not():
    assert _walk_channels({0.25: 0.60, 0.5: 0.279, 0.75: 0.222}, 0.505) == (0.5, None)


def test_an_allocation_round_aims_its_solution_under_the_budget_not_at_it(tmp_path, resnet_onnx, fast_profile):
    """A table right on average puts half of the solutions predicted at the budget just over it (MobileNetV2-style
    0.2x: +0.07%, then +7%, and a 300 s search with no answer): each round is solved for ROUND_AIM under it, and
    its record says so."""
    from edgeslim.plugins.knapsack import ROUND_AIM, KnapsackAllocation

    session, view, base, offered, has_table = knapsack_session(tmp_path, resnet_onnx, fast_profile, 0.8, trials=1,
                                                               knob="sparsity")
    strategy = KnapsackAllocation()
    strategy._rounds(view, base, offered, strategy._sensitivity(view, base, offered), has_table, {})
    first = next(r for r in session.store.all() if r.purpose.startswith("knapsack: round 1"))
    aimed = float(first.purpose.split("aimed at ")[1].split(" ms")[0])
    predicted = float(first.purpose.split("predicted ")[1].split(" ms")[0])
    assert (aimed, predicted <= aimed) == (round((1 - ROUND_AIM) * view.budget_ms, 3), True)
