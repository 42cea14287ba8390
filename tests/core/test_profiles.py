from pathlib import Path

import pytest

from edgeslim.errors import EdgeslimError
from edgeslim.profile import builtin_profile_names, load_profile


def test_builtin_local_cpu_loads():
    profile = load_profile("local-cpu")
    assert "local-cpu" in builtin_profile_names()
    assert profile.target.name == "onnxruntime"
    assert profile.target.options() == {"threads": 1}
    assert profile.budget.ratio == 0.5 and profile.boards == []


def test_extends_overrides_tables_and_keeps_the_rest(tmp_path: Path):
    path = tmp_path / "mine.toml"
    path.write_text('name = "mine"\nextends = "local-cpu"\n[budget]\nlatency_ms = 3.5\nratio = 0.5\n')
    with pytest.raises(EdgeslimError, match="either latency_ms or ratio"):
        load_profile(str(path))
    path.write_text('name = "mine"\nextends = "local-cpu"\n[target]\nthreads = 2\n[budget]\nstatistic = "p90"\n')
    profile = load_profile(str(path))
    assert profile.name == "mine"
    assert profile.target.name == "onnxruntime" and profile.target.options() == {"threads": 2}
    assert profile.budget.statistic == "p90" and profile.budget.ratio == 0.5
    assert profile.measurement.min_runs == 50


def test_extends_a_relative_path(tmp_path: Path):
    (tmp_path / "base.toml").write_text('name = "base"\n[target]\nname = "onnxruntime"\n[budget]\nlatency_ms = 9\n')
    (tmp_path / "child.toml").write_text('name = "child"\nextends = "base.toml"\n')
    assert load_profile(str(tmp_path / "child.toml")).budget.latency_ms == 9


@pytest.mark.parametrize(
    "body, message",
    [
        ('name = "x"\n[target]\nname = "onnxruntime"\n[budget]\nlatency_msx = 3\n',
         "budget.latency_msx: unknown field"),
        ('name = "x"\n[target]\nname = "onnxruntime"\n[budget]\nlatency_ms = -1\n', "budget.latency_ms: "),
        ('name = "x"\n[target]\nname = "onnxruntime"\n[budget]\nstatistic = "p99"\n', "budget.statistic: "),
        ('name = "x"\ncolour = "red"\n[target]\nname = "onnxruntime"\n', "colour: unknown field"),
        ('name = "x"\n[target]\nname = "onnxruntime"\n[[boards]]\nhost = "pi"\npassword = "hunter2"\n',
         "passwords are not accepted"),
        ('name = "x"\n[target\n', "not valid TOML"),
        ('name = "x"\n', "target: Field required"),
    ],
)
def test_bad_profiles_say_which_field(tmp_path: Path, body: str, message: str):
    path = tmp_path / "bad.toml"
    path.write_text(body)
    with pytest.raises(EdgeslimError) as info:
        load_profile(str(path))
    assert message in str(info.value)
    assert str(path.resolve()) in str(info.value)


def test_unknown_profile_lists_builtins():
    with pytest.raises(EdgeslimError, match=r"unknown profile 'nope'.*local-cpu"):
        load_profile("nope")


def test_extends_cycle_is_reported(tmp_path: Path):
    (tmp_path / "a.toml").write_text('name = "a"\nextends = "b.toml"\n')
    (tmp_path / "b.toml").write_text('name = "b"\nextends = "a.toml"\n')
    with pytest.raises(EdgeslimError, match="extends itself"):
        load_profile(str(tmp_path / "a.toml"))


def test_target_options_are_validated_by_the_target(tmp_path: Path):
    from edgeslim.host import load_registry

    target_cls = load_registry().targets["onnxruntime"]
    with pytest.raises(EdgeslimError, match="target.thread: unknown field"):
        target_cls.from_options({"thread": 2})


def _child(tmp_path: Path, body: str):
    path = tmp_path / "child.toml"
    path.write_text('name = "child"\n' + body)
    return load_profile(str(path))


def test_a_childs_latency_budget_replaces_the_inherited_ratio(tmp_path: Path):
    profile = _child(tmp_path, 'extends = "local-cpu"\n[budget]\nlatency_ms = 5.0\n')
    assert (profile.budget.latency_ms, profile.budget.ratio) == (5.0, None)


def test_a_childs_ratio_replaces_the_inherited_latency_budget(tmp_path: Path):
    (tmp_path / "parent.toml").write_text('name = "parent"\n[target]\nname = "onnxruntime"\n[budget]\n'
                                          'latency_ms = 5.0\n')
    profile = _child(tmp_path, 'extends = "parent.toml"\n[budget]\nratio = 0.3\n')
    assert (profile.budget.latency_ms, profile.budget.ratio) == (None, 0.3)


def test_target_options_are_not_carried_into_another_target(tmp_path: Path):
    profile = _child(tmp_path, 'extends = "raspberry-pi-5"\n[target]\nname = "openvino"\n'
                               '[[boards]]\nhost = "pi"\nuser = "pi"\n')
    assert profile.target.options() == {}


def test_the_description_is_not_inherited(tmp_path: Path):
    profile = _child(tmp_path, 'extends = "local-cpu"\n')
    assert profile.description == ""


def test_the_readmes_example_profile_loads(tmp_path: Path):
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("## Profiles", 1)[1]
    example = section.split("```toml\n", 1)[1].split("```", 1)[0]
    path = tmp_path / "my-box.toml"
    path.write_text(example)
    profile = load_profile(str(path))
    assert (profile.name, profile.budget.latency_ms, profile.budget.ratio) == ("my-box", 20.0, None)
