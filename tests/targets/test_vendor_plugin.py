"""The example vendor plugin, installed as its own distribution, registers through the entry point and a
search uses it."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "edgeslim-ort-format"


def _setuptools_version() -> tuple[int, ...]:
    try:
        import setuptools
    except ImportError:
        return (0,)
    return tuple(int(p) for p in setuptools.__version__.split(".")[:2] if p.isdigit())


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory) -> Path:
    if _setuptools_version() < (68,):  # the example builds without isolation (no download): it needs its backend
        pytest.skip("building the example plugin needs setuptools>=68 here (pip install -U setuptools)")
    site = tmp_path_factory.mktemp("site")
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                           "--target", str(site), str(EXAMPLE)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert list(site.glob("edgeslim_ort_format-*.dist-info"))
    return site


def cli(site: Path, *args) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, "-m", "edgeslim.cli", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=600)


def test_installed_plugin_is_listed(plugin_site):
    proc = cli(plugin_site, "plugins", "--json")
    assert proc.returncode == 0, proc.stderr
    rows = {r["name"]: r for r in json.loads(proc.stdout)}
    assert rows["onnxruntime-ortformat"]["plugin"] == "ort_format" and rows["onnxruntime-ortformat"]["available"]


def test_search_with_the_vendor_target(plugin_site, tmp_path, resnet_onnx):
    profile = tmp_path / "ortformat.toml"
    profile.write_text('name = "ort-format"\nextends = "local-cpu"\n[target]\nname = "onnxruntime-ortformat"\n'
                       'threads = 1\n[measurement]\nwarmup = 3\nmin_runs = 15\nmin_seconds = 0.15\nverify_rounds = 3\n')
    out = tmp_path / "run"
    proc = cli(plugin_site, "search", resnet_onnx, "--profile", profile, "--budget-ms", "0.0001", "--trials", "5",
               "--out", out, "--json")
    assert proc.returncode == 3, proc.stderr
    manifest = json.loads(proc.stdout)
    assert manifest["target"]["name"] == "onnxruntime-ortformat"
    assert manifest["baseline"]["artifact"].endswith(".ort") and (out / manifest["baseline"]["artifact"]).is_file()
    assert manifest["baseline"]["latency"]["p50_ms"] > 0
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "b"\nextends = "local-cpu"\n[target]\nname = "onnxruntime-ortformat"\noptimisation = "x"\n')
    proc = cli(plugin_site, "search", resnet_onnx, "--profile", bad, "--out", tmp_path / "bad")
    assert proc.returncode == 1 and "target.optimisation: unknown field" in " ".join(proc.stderr.split())
