"""The command line: plugins, profiles, bench, search, apply, report, demo."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, NoReturn

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from edgeslim.cli_runs import out_console, resume, run_multi_devices, run_search, show_profile
from edgeslim.errors import BudgetNotMet, EdgeslimError
from edgeslim.progress import reporter_for_stderr

err_console = Console(stderr=True)


def _default_out(model: str) -> str:
    stem = Path(model).stem if not model.startswith("builtin:") else model.split(":", 1)[1]
    return str(Path("edgeslim-runs") / f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="edgeslim")
def cli() -> None:
    """edgeslim: compress a model until it meets a latency budget measured on the device."""


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def plugins(as_json: bool) -> None:
    """List techniques, targets and strategies, with availability and why not."""
    from edgeslim.host import load_registry

    registry = load_registry()
    rows = []
    for kind, things in (("technique", registry.techniques), ("recovery", registry.recoveries),
                         ("target", registry.targets), ("strategy", registry.strategies)):
        for name, thing in sorted(things.items()):
            ok, why = thing.available()
            rows.append({"kind": kind, "name": name, "plugin": registry.provided_by[(kind, name)],
                         "available": ok, "detail": why, "description": thing.description})
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    table = Table(title="edgeslim plugins")
    for col in ("kind", "name", "available", "plugin", "description / why not"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["kind"], r["name"], "yes" if r["available"] else "[red]no[/red]", r["plugin"],
                      r["description"] if r["available"] else r["detail"])
    out_console.print(table)


@cli.command()
@click.argument("name", required=False)
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def profiles(name: str | None, as_json: bool) -> None:
    """List built-in profiles, or show one (a name or a TOML path) fully resolved."""
    from edgeslim.profile import builtin_profile_names, load_profile

    if name:
        show_profile(load_profile(name, allow_template=True), as_json)
        return
    loaded = [load_profile(n, allow_template=True) for n in builtin_profile_names()]
    if as_json:
        click.echo(json.dumps([p.model_dump(mode="json") for p in loaded], indent=2))
        return
    table = Table(title="built-in profiles")
    for col in ("name", "target", "budget", "use", "description"):
        table.add_column(col)
    for p in loaded:
        budget = f"{p.budget.latency_ms} ms" if p.budget.latency_ms else f"{p.budget.ratio} x baseline"
        kind = "template (extend with [[boards]])" if p.template else "ready"
        table.add_row(p.name, p.target.name, f"{budget} ({p.budget.statistic})", escape(kind), escape(p.description))
    out_console.print(table)


@cli.command()
@click.option("--profile", "profile_ref", default="local-cpu", show_default=True)
@click.option("--accept-new-host-keys", is_flag=True,
              help="trust boards whose host key is not yet in known_hosts and add it there (first use only)")
@click.option("--json", "as_json", is_flag=True)
def doctor(profile_ref: str, accept_new_host_keys: bool, as_json: bool) -> None:
    """Check every device of a profile: connection, host key, Python, runtime, governor, temperature, space."""
    from edgeslim.doctor import diagnose
    from edgeslim.host import load_registry
    from edgeslim.profile import load_profile

    profile = load_profile(profile_ref)
    target_cls = load_registry().targets.get(profile.target.name)
    if target_cls is not None:  # a typo in [target] is a problem doctor names, before connecting anywhere
        target_cls.check_options(profile.target.options(), profile.source)
    report = diagnose(profile, accept_new_host_keys=accept_new_host_keys)
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        table = Table(title=f"edgeslim doctor: {report['profile']} (target {report['target']})")
        for col in ("device", "ok", "python", "runtime", "upload + run", "problems (fix)", "warnings"):
            table.add_column(col, overflow="fold")
        uploads = {"sftp": "ok (SFTP)", "exec": "ok (exec channel: no SFTP on the board)"}
        for b in report["boards"]:
            facts = b["facts"]
            runtimes = ", ".join(f"{k} {v}" for k, v in (facts.get("runtimes") or {}).items() if v)
            table.add_row(b["where"], "yes" if b["ok"] else "[red]no[/red]", facts.get("python", "-"), runtimes,
                          uploads.get(b.get("transfer", ""), "-" if b["where"] == "local" else "not checked"),
                          escape("\n".join(b["problems"]) or "-"), escape("\n".join(b["warnings"]) or "-"))
        out_console.print(table)
        for warning in report["warnings"]:
            err_console.print(f"warning: {escape(warning)}")
    bad = [b["where"] for b in report["boards"] if not b["ok"]]
    if bad:
        raise EdgeslimError(f"{len(bad)} of {len(report['boards'])} device(s) cannot measure: {', '.join(bad)}")


def _shapes(items: tuple[str, ...]) -> dict[str, list[int]]:
    from edgeslim.model import parse_input_shapes

    return parse_input_shapes(items)


@cli.command()
@click.argument("model")
@click.option("--profile", "profile_ref", default="local-cpu", show_default=True, help="built-in name or TOML path")
@click.option("--input-shape", "input_shapes", multiple=True, help="NAME=1,3,224,224 for symbolic inputs")
@click.option("--json", "as_json", is_flag=True)
def bench(model: str, profile_ref: str, input_shapes: tuple[str, ...], as_json: bool) -> None:
    """Measure one ONNX model's latency on the profile's device."""
    from edgeslim.commands import bench as run_bench

    stats = run_bench(model, profile_ref, _shapes(input_shapes))
    data = stats.to_dict()
    if as_json:
        data.pop("samples_ms")
        click.echo(json.dumps(data, indent=2))
    elif stats.n:  # a failed measurement has no numbers: only the error below, not a table of dashes
        table = Table(title=f"{model} on {profile_ref}")
        for col in ("status", "p50 ms", "p90 ms", "mean ms", "cv", "n", "load ms", "peak RSS MB", "runtime"):
            table.add_column(col, no_wrap=True)
        f = lambda v, digits=3: "-" if v is None else f"{v:.{digits}f}"  # noqa: E731
        table.add_row(stats.status, f(stats.p50_ms), f(stats.p90_ms), f(stats.mean_ms), f(stats.cv, 2), str(stats.n),
                      f(stats.load_ms, 1), f(stats.peak_rss_mb, 1), f"{stats.runtime} {stats.runtime_version}")
        out_console.print(table)
    if not stats.usable:
        raise EdgeslimError(f"measurement {stats.status}: {stats.error}")


def recovery_options(func: Any) -> Any:
    """The recovery options shared by ``search`` and ``apply``."""
    func = click.option("--distill-feature", "distill_features", multiple=True, metavar="STUDENT=TEACHER",
                        help="also match an intermediate module's output (repeatable; shapes must agree)")(func)
    func = click.option("--recovery-option", "recovery_option", multiple=True, metavar="KEY=VALUE",
                        help="recovery setting, e.g. temperature=2 alpha=0.9 lr=5e-4 feature_weight=0.5")(func)
    func = click.option("--recovery", default="distillation", show_default=True,
                        help="recovery after pruning/low-rank when the task has training data: a recovery "
                             "plugin (`edgeslim plugins` lists them: distillation, finetune, ...)")(func)
    return func


def _recovery(recovery: str, pairs: tuple[str, ...], features: tuple[str, ...]) -> dict[str, Any]:
    from edgeslim.host import load_registry
    from edgeslim.recovery import parse_recovery_options

    return parse_recovery_options(load_registry().recoveries, recovery, pairs, features)


@cli.command()
@click.argument("model", required=False)
@click.option("--profile", "profile_refs", multiple=True, help="device profile (built-in name or TOML path); "
              "repeat for several devices in one run: one best model per device  [default: local-cpu]")
@click.option("--budget-ms", type=float, help="latency budget in ms (overrides the profile)")
@click.option("--budget-ratio", type=float, help="budget as a fraction of the measured baseline (overrides)")
@click.option("--calib", type=str, help="calibration inputs: .npz with one array per model input")
@click.option("--input-shape", "input_shapes", multiple=True, help="NAME=1,3,320,320 (repeatable)")
@click.option("--strategy", default="greedy", show_default=True, help="greedy, knapsack, tpe or nsga2 (Optuna)")
@click.option("--storage", type=str, help="Optuna storage URL for tpe/nsga2 (default: SQLite in the run dir)")
@click.option("--trial-grace", "trial_grace_s", type=click.FloatRange(min=3), default=120.0, show_default=True,
              help="tpe/nsga2: seconds without a worker's heartbeat before its running trial is retried")
@click.option("--no-predictor", is_flag=True, help="measure every candidate the strategy proposes (no latency table)")
@click.option("--trials", type=click.IntRange(min=1), default=30, show_default=True,
              help="at most this many measured candidates")
@click.option("--time-budget", "time_budget_s", type=click.FloatRange(min=1), default=None,
              help="wall-clock seconds for the search; measuring stops when they are spent (the answer's final "
                   "recovery then gets at most half as many more)")
@click.option("--max-metric-drop", type=click.FloatRange(min=0), default=None,
              help="the most of the metric the answer may lose, in its units (0.02: two points of accuracy); a "
                   "faster model that loses more does not meet the budget  [default: the profile's, else no limit]")
@click.option("--final-epochs", type=click.IntRange(min=0), default=None,
              help="recovery epochs for the answer before verification  [default: 3 x --finetune-epochs]")
@click.option("--final-patience", type=click.IntRange(min=1), default=None,
              help="the answer's recovery keeps its best epoch (on the eval data); stop it after this many epochs "
                   "without a better one  [default: never early]")
@click.option("--finetune-epochs", type=click.IntRange(min=0), default=2, show_default=True,
              help="recovery fine-tune after pruning (task files with train_data)")
@click.option("--sensitivity-epochs", type=click.IntRange(min=0), default=None,
              help="recovery epochs of each single move the greedy sensitivity phase trains to rank  "
                   "[default: half of --finetune-epochs, at least 1]")
@click.option("--out", "out_dir", type=str, help="run directory (default edgeslim-runs/NAME-TIME)")
@click.option("--resume", "resume_dir", type=str, help="continue a killed or failed search in DIR")
@click.option("--json", "as_json", is_flag=True, help="print the manifest as JSON")
@recovery_options
def search(model: str | None, profile_refs: tuple[str, ...], budget_ms: float | None, budget_ratio: float | None,
           calib: str | None, input_shapes: tuple[str, ...], strategy: str, storage: str | None,
           trial_grace_s: float, no_predictor: bool, trials: int, time_budget_s: float | None,
           max_metric_drop: float | None, final_epochs: int | None, final_patience: int | None,
           finetune_epochs: int, sensitivity_epochs: int | None, out_dir: str | None,
           resume_dir: str | None, as_json: bool, recovery: str, recovery_option: tuple[str, ...],
           distill_features: tuple[str, ...]) -> None:
    """Search for the most accurate compressed MODEL (.onnx or TASK.py) that meets the budget."""
    from edgeslim.config import SearchConfig

    if resume_dir:
        resume(model, resume_dir, as_json)
        return
    profiles = list(profile_refs) or ["local-cpu"]
    if not model:
        raise EdgeslimError("search needs MODEL (.onnx or TASK.py) or --resume DIR")
    if budget_ms is not None and budget_ratio is not None:
        raise EdgeslimError("give --budget-ms or --budget-ratio, not both")
    if budget_ms is not None and budget_ms <= 0:
        raise EdgeslimError(f"--budget-ms must be positive, got {budget_ms}")
    if budget_ratio is not None and not 0 < budget_ratio <= 1:
        raise EdgeslimError(f"--budget-ratio must be in (0, 1], got {budget_ratio}")
    from edgeslim.profile import load_profile

    for ref in profiles:
        load_profile(ref)  # fail on a bad profile before any work
    if len(set(profiles)) != len(profiles):
        raise EdgeslimError(f"--profile given twice: {', '.join(p for p in profiles if profiles.count(p) > 1)}")
    if len(profiles) > 1 and storage:
        raise EdgeslimError("--storage shares one device's search across workers; give one --profile with it")
    config = SearchConfig(model=model, profile=profiles[0], out_dir=out_dir or _default_out(model),
                          budget_ms=budget_ms, budget_ratio=budget_ratio, calib=calib,
                          input_shapes=_shapes(input_shapes), strategy=strategy, storage=storage, trials=trials,
                          finetune_epochs=finetune_epochs, sensitivity_epochs=sensitivity_epochs, recovery=recovery,
                          recovery_options=_recovery(recovery, recovery_option, distill_features),
                          trial_grace_s=trial_grace_s, predictor=not no_predictor, time_budget_s=time_budget_s,
                          max_metric_drop=max_metric_drop, final_epochs=final_epochs, final_patience=final_patience)
    if (Path(config.out_dir) / "manifest.json").exists():
        raise EdgeslimError(f"--out {config.out_dir} already holds a finished run; choose another directory "
                            "(or --resume it)")
    if len(profiles) > 1:
        run_multi_devices(config, profiles, as_json)
    else:
        run_search(config, as_json)


@cli.command()
@click.argument("model")
@click.option("--plan", "plan_path", required=True, help="PLAN.json (e.g. best/plan.json of a search)")
@click.option("--profile", "profile_ref", default="local-cpu", show_default=True)
@click.option("--out", "out_dir", required=True)
@click.option("--calib", type=str)
@click.option("--input-shape", "input_shapes", multiple=True)
@click.option("--budget-ms", type=float)
@click.option("--finetune-epochs", type=click.IntRange(min=0), default=2, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@click.option("--qat", is_flag=True, help="train with the plan's quantization simulated (fake-quant, STE) during "
              "the recovery, for when post-training quantization loses too much (task files with train_data)")
@recovery_options
def apply(model: str, plan_path: str, profile_ref: str, out_dir: str, calib: str | None,
          input_shapes: tuple[str, ...], budget_ms: float | None, finetune_epochs: int, as_json: bool, qat: bool,
          recovery: str, recovery_option: tuple[str, ...], distill_features: tuple[str, ...]) -> None:
    """Replay a plan on MODEL: build, measure against the original (interleaved), write DIR."""
    from edgeslim.commands import apply_plan
    from edgeslim.config import SearchConfig

    try:
        plan = json.loads(Path(plan_path).read_text())
    except OSError:
        raise EdgeslimError(f"--plan {plan_path}: file not found") from None
    except ValueError as exc:
        raise EdgeslimError(f"--plan {plan_path}: not valid JSON ({exc})") from None
    if not isinstance(plan, dict) or not isinstance(plan.get("layers", {}), dict):
        raise EdgeslimError(f"--plan {plan_path}: expected an object like "
                            '{"layers": {"LAYER": {"bits": 8}}, "model": {}}')
    if qat:
        plan.setdefault("model", {})["qat"] = True
    config = SearchConfig(model=model, profile=profile_ref, out_dir=out_dir, calib=calib,
                          input_shapes=_shapes(input_shapes), budget_ms=budget_ms, finetune_epochs=finetune_epochs,
                          recovery=recovery, recovery_options=_recovery(recovery, recovery_option, distill_features))
    with reporter_for_stderr() as reporter:
        manifest = apply_plan(config, plan, reporter)
    if as_json:
        click.echo(json.dumps(manifest, indent=2))
    else:
        from edgeslim.report import print_report

        print_report(Path(out_dir), out_console)
    if manifest["status"] != "ok":
        judged = (manifest["best"].get("verification") or {}).get("judged_on", "")
        raise BudgetNotMet(f"the plan's model misses the budget of {manifest['budget']['latency_ms']:.3f} ms "
                           f"when measured against the original ({judged}); see {out_dir}/report.md")


@cli.command()
@click.argument("run_dir")
@click.option("--json", "as_json", is_flag=True)
def report(run_dir: str, as_json: bool) -> None:
    """Summarise a finished run directory."""
    from edgeslim.report import load_manifest, print_report

    if as_json:
        click.echo(json.dumps(load_manifest(Path(run_dir)), indent=2))
    else:
        print_report(Path(run_dir), out_console)


@cli.command()
@click.option("--out", "out_dir", type=str, help="run directory (default edgeslim-runs/demo-TIME)")
# 12 measured candidates after the speed gate (which no longer uses up --trials): about what the demo measured
# before, in about four minutes here
@click.option("--trials", type=click.IntRange(min=1), default=12, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def demo(out_dir: str | None, trials: int, as_json: bool) -> None:
    """The embedded default: a CNN on scikit-learn's digits, budget half its FP32 latency, this machine."""
    from edgeslim.config import SearchConfig

    # final_epochs=0: the demo's network recovers fully within the search (its answers score as the original
    # does); a longer final recovery would only add minutes to the first command a user runs
    config = SearchConfig(model="builtin:demo", profile="local-cpu", out_dir=out_dir or _default_out("builtin:demo"),
                          budget_ratio=0.5, trials=trials, final_epochs=0)
    if not as_json:
        err_console.print(f"edgeslim demo: digits CNN, budget 0.5 x measured FP32 latency, run dir {config.out_dir}")
    run_search(config, as_json)


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``, ``docker stop``, systemd), unwound like Ctrl-C."""


def _unwind_on_sigterm(signum: int, frame: object) -> None:
    # Python's default for SIGTERM exits at once: no ``finally`` runs, so agent job folders stay in the temp
    # directory and a running agent is orphaned. Unwinding removes both; the store keeps every measurement.
    raise Terminated


def _stopped(terminated: bool) -> NoReturn:
    err_console.print(f"edgeslim: {'terminated' if terminated else 'interrupted'}; a search resumes with --resume DIR")
    sys.exit(143 if terminated else 130)  # the shell's codes for SIGTERM and SIGINT


def main(argv: list[str] | None = None) -> None:
    if threading.current_thread() is not threading.main_thread():  # signal handlers belong to the main thread
        _run_cli(argv)
        return
    previous = signal.signal(signal.SIGTERM, _unwind_on_sigterm)
    try:
        _run_cli(argv)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _run_cli(argv: list[str] | None) -> None:
    try:
        cli.main(args=argv, prog_name="edgeslim", standalone_mode=False)
    except EdgeslimError as exc:
        err_console.print(f"[bold red]edgeslim: error:[/bold red] {escape(str(exc))}", highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort as exc:  # click turns Ctrl-C (and so SIGTERM) into Abort
        _stopped(isinstance(exc.__cause__, Terminated))
    except click.ClickException as exc:
        exc.show()
        sys.exit(1)
    except KeyboardInterrupt as exc:
        _stopped(isinstance(exc, Terminated))
    except Exception as exc:
        if os.environ.get("EDGESLIM_DEBUG"):
            raise
        err_console.print(f"[bold red]edgeslim: internal error:[/bold red] {type(exc).__name__}: {escape(str(exc))} "
                          "(set EDGESLIM_DEBUG=1 for the traceback, and please report it)", highlight=False)
        sys.exit(1)
    sys.exit(0)


if __name__ == "__main__":
    main()
