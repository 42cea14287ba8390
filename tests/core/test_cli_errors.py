"""Bad input: a one-line reason naming the thing, a non-zero exit, no traceback, no result presented."""

from pathlib import Path

import numpy as np
import pytest

from tests.conftest import run_cli


def assert_clean_failure(proc, *fragments: str, code: int = 1) -> None:
    assert proc.returncode == code, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    error_lines = [ln for ln in lines if "error" in ln]
    assert error_lines, proc.stderr
    text = " ".join(proc.stderr.split())
    for fragment in fragments:
        assert fragment in text, text


def test_missing_model(tmp_path: Path):
    proc = run_cli("search", tmp_path / "absent.onnx", "--out", tmp_path / "out")
    assert_clean_failure(proc, "model not found", "absent.onnx")
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_file_that_is_not_onnx(tmp_path: Path):
    bogus = tmp_path / "photo.onnx"
    bogus.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8)
    proc = run_cli("search", bogus, "--out", tmp_path / "out")
    assert_clean_failure(proc, "photo.onnx")
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_truncated_onnx(tmp_path: Path, resnet_onnx: Path):
    cut = tmp_path / "cut.onnx"
    data = resnet_onnx.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    proc = run_cli("search", cut, "--out", tmp_path / "out")
    assert_clean_failure(proc, "cut.onnx")
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_symbolic_input_needs_a_shape(tmp_path: Path, symbolic_onnx: Path):
    proc = run_cli("search", symbolic_onnx, "--out", tmp_path / "out")
    assert_clean_failure(proc, "input 'images' has symbolic dimensions", "--input-shape images=N,3,N,N")


def test_bad_input_shape_syntax(tmp_path: Path, symbolic_onnx: Path):
    proc = run_cli("search", symbolic_onnx, "--input-shape", "images=1,3,x", "--out", tmp_path / "out")
    assert_clean_failure(proc, "--input-shape 'images=1,3,x'")


def test_unknown_profile(tmp_path: Path, resnet_onnx: Path):
    proc = run_cli("search", resnet_onnx, "--profile", "raspberry-pi-9", "--out", tmp_path / "out")
    assert_clean_failure(proc, "unknown profile 'raspberry-pi-9'")


@pytest.mark.parametrize("body, fragment", [
    ('name = "p"\nextends = "local-cpu"\n[budget]\nlatncy_ms = 2\n', "budget.latncy_ms: unknown field"),
    ('name = "p"\nextends = "local-cpu"\n[budget\n', "not valid TOML"),
    ('name = "p"\nextends = "local-cpu"\n[target]\nthreads = "many"\n', "target.threads"),
])
def test_bad_profile_fields(tmp_path: Path, resnet_onnx: Path, body: str, fragment: str):
    profile = tmp_path / "p.toml"
    profile.write_text(body)
    proc = run_cli("search", resnet_onnx, "--profile", profile, "--out", tmp_path / "out")
    assert_clean_failure(proc, fragment)


def test_task_file_that_raises(tmp_path: Path):
    task = tmp_path / "broken_task.py"
    task.write_text("import numpy\n\ndef make_task():\n    raise ValueError('labels.csv is missing')\n")
    proc = run_cli("search", task, "--out", tmp_path / "out")
    assert_clean_failure(proc, "broken_task.py raised ValueError: labels.csv is missing (line 4)")


def test_task_file_with_syntax_error(tmp_path: Path):
    task = tmp_path / "typo_task.py"
    task.write_text("def make_task(:\n    pass\n")
    proc = run_cli("search", task, "--out", tmp_path / "out")
    assert_clean_failure(proc, "typo_task.py raised SyntaxError")


def test_bad_calib_file(tmp_path: Path, resnet_onnx: Path):
    calib = tmp_path / "calib.npz"
    calib.write_text("not numpy")
    proc = run_cli("search", resnet_onnx, "--calib", calib, "--out", tmp_path / "out")
    assert_clean_failure(proc, "--calib", "not a readable .npz")


def test_report_on_a_directory_without_a_run(tmp_path: Path):
    assert_clean_failure(run_cli("report", tmp_path), "holds no manifest.json")


def test_plugins_and_profiles_listings():
    proc = run_cli("plugins", "--json")
    assert proc.returncode == 0, proc.stderr
    names = {(p["kind"], p["name"]) for p in __import__("json").loads(proc.stdout)}
    assert {("technique", "quantization"), ("technique", "pruning"), ("target", "onnxruntime"),
            ("strategy", "greedy"), ("recovery", "distillation"), ("recovery", "least_squares")} <= names
    proc = run_cli("profiles", "local-cpu", "--json")
    assert proc.returncode == 0 and '"onnxruntime"' in proc.stdout


@pytest.mark.parametrize(("args", "fragment"), [
    (("--recovery", "magic"), "--recovery magic: not an installed recovery (distillation, finetune, least_squares)"),
    (("--recovery-option", "temperature"), "expected KEY=VALUE"),
    (("--recovery-option", "temperature=-1"), "--recovery-option.temperature"),
    (("--recovery-option", "tempreature=2"), "tempreature"),
    (("--recovery-option", "schedule=linear"), "--recovery-option.schedule"),
    (("--distill-feature", "layer2"), "expected STUDENT_MODULE=TEACHER_MODULE"),
    (("--recovery", "finetune", "--recovery-option", "alpha=1"),
     "finetune: --recovery-option.alpha: unknown field (check the spelling; `edgeslim plugins` lists recoveries; "
     "finetune takes lr, batch_size, seed)"),
])
def test_bad_recovery_options(tmp_path: Path, resnet_onnx: Path, args: tuple[str, ...], fragment: str):
    proc = run_cli("search", resnet_onnx, "--out", tmp_path / "out", *args)
    assert_clean_failure(proc, fragment)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("array", "fragment"), [
    (np.zeros((4, 3, 64, 64), np.float32), "array 'images' has shape [4, 3, 64, 64], so one sample is [1, 3, 64, 64]; "
                                           "model input 'images' takes [1, 3, 32, 32]"),
    (np.zeros((4, 32, 32, 3), np.float32), "one sample is [1, 32, 32, 3]; model input 'images' takes [1, 3, 32, 32]"),
    (np.zeros((4, 1, 3, 32, 32), np.float32), "one sample is [1, 1, 3, 32, 32]"),
    (np.full((4, 3, 32, 32), np.nan, np.float32), "array 'images' holds 12288 NaN/Inf value(s)"),
    (np.array([["a"] * 4] * 4), "holds <U1 values; expected numbers"),
], ids=["64px", "nhwc", "extra-axis", "nan", "strings"])
def test_calib_arrays_that_do_not_fit_the_model_are_refused(tmp_path: Path, resnet_onnx: Path, array, fragment):
    calib = tmp_path / "calib.npz"
    np.savez(calib, images=array)
    proc = run_cli("search", resnet_onnx, "--calib", calib, "--out", tmp_path / "out")
    assert_clean_failure(proc, fragment)


def test_a_failed_start_leaves_no_run_directory(tmp_path: Path, resnet_onnx: Path):
    calib = tmp_path / "calib.npz"
    np.savez(calib, images=np.zeros((4, 3, 64, 64), np.float32))
    run_cli("search", resnet_onnx, "--calib", calib, "--out", tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", [("profiles",), ("doctor", "--profile")])
def test_a_target_option_typo_is_refused_naming_the_file(tmp_path: Path, command: tuple[str, ...]):
    profile = tmp_path / "typo.toml"
    profile.write_text('name = "typo"\nextends = "local-cpu"\n[target]\nthread = 2\n')
    proc = run_cli(*command, profile)
    assert_clean_failure(proc, f"profile {profile}: target.thread: unknown field")


def test_profiles_lists_the_targets_options_with_their_meaning():
    proc = run_cli("profiles", "local-cpu", "--json")
    options = {o["name"]: o for o in __import__("json").loads(proc.stdout)["target_options"]}
    assert options["threads"]["description"] == "intra-op threads; 0 lets ONNX Runtime choose"


def test_an_onnx_file_without_its_external_data_names_the_missing_file(tmp_path: Path):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.ones((64, 64), np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64])], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.save(model, str(tmp_path / "m.onnx"), save_as_external_data=True, location="m.onnx.data", size_threshold=0)
    (tmp_path / "m.onnx.data").unlink()
    proc = run_cli("search", tmp_path / "m.onnx", "--out", tmp_path / "out")
    assert_clean_failure(proc, "keeps its weights in external data file(s) that are not beside it: m.onnx.data")


def test_a_torch_checkpoint_points_to_task_files(tmp_path: Path):
    checkpoint = tmp_path / "model.pt"
    checkpoint.write_bytes(b"PK\x03\x04not really a checkpoint")
    proc = run_cli("search", checkpoint, "--out", tmp_path / "out")
    assert_clean_failure(proc, "is a .pt file, not ONNX: for a torch model write a task file")
