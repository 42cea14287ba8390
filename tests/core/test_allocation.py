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
