"""What the command line does around a run: start it with progress, finish it (report, exit status), resume
it, show a profile. Kept apart from ``edgeslim.cli``, which only declares the commands and their options."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from edgeslim.errors import BudgetNotMet, EdgeslimError
from edgeslim.progress import reporter_for_stderr

# piped to a file or a CI log, rich would cut tables at 80 columns: give them room instead
out_console = Console() if sys.stdout.isatty() else Console(width=160)


def show_profile(profile: Any, as_json: bool) -> None:
    """One profile, resolved, its target options validated by the target and listed with what they mean."""
    from edgeslim.host import load_registry

    target_cls = load_registry().targets.get(profile.target.name)
    if target_cls is None:
        raise EdgeslimError(f"profile {profile.source}: target.name: unknown target {profile.target.name!r}")
    settings = target_cls.check_options(profile.target.options(), profile.source)
    data = profile.model_dump(mode="json")
    data["target"] = {"name": profile.target.name, **settings.model_dump(mode="json")}
    options = target_cls.describe_options()
    if as_json:
        click.echo(json.dumps({**data, "target_options": options}, indent=2, default=str))
        return
    out_console.print_json(json.dumps(data, default=str))
    table = Table(title=f"[target] options of {target_cls.name}")
    for col in ("option", "value here", "default", "type", "meaning"):
        table.add_column(col, overflow="fold")
    for o in options:
        table.add_row(o["name"], escape(str(data["target"].get(o["name"]))), escape(str(o["default"])),
                      escape(o["type"]), escape(o["description"]))
    out_console.print(table)


def finish(manifest: dict[str, Any], out_dir: str, as_json: bool) -> None:
    from edgeslim.report import print_report

    if as_json:
        click.echo(json.dumps(manifest, indent=2))
    else:
        print_report(Path(out_dir), out_console)
    if manifest["status"] != "ok":
        fastest, limit = manifest.get("fastest"), manifest["budget"].get("max_metric_drop")
        budget = f"the budget of {manifest['budget']['latency_ms']:.3f} ms" + (
            "" if limit is None else f" within --max-metric-drop {limit:g} (the notes say what it ruled out)")
        floor = manifest.get("runtime_floor_ms")
        if floor is not None and floor >= manifest["budget"]["latency_ms"]:
            budget += f" (the runtime alone takes {floor:.3f} ms per inference here, whatever the model)"
        if fastest:
            raise BudgetNotMet(
                f"no candidate met {budget}; the fastest was {fastest['key']} at {fastest['latency']['p50_ms']:.3f} "
                f"ms p50 ({fastest['artifact']}), see {out_dir}/manifest.json")
        raise BudgetNotMet(f"no candidate met {budget}, and none measured faster than the original model; see "
                           f"{out_dir}/report.md")


def run_search(config: Any, as_json: bool) -> None:
    from edgeslim.search import SearchSession

    with reporter_for_stderr() as reporter:
        session = SearchSession(config, reporter)
        manifest = session.run()
    finish(manifest, config.out_dir, as_json)


def run_multi_devices(config: Any, profiles: list[str], as_json: bool) -> None:
    from edgeslim.multi import run_multi
    from edgeslim.report import print_report

    with reporter_for_stderr() as reporter:
        manifest = run_multi(config, profiles, reporter)
    if as_json:
        click.echo(json.dumps(manifest, indent=2))
    else:
        print_report(Path(config.out_dir), out_console)
    missed = [name for name, d in manifest["devices"].items() if d["status"] != "ok"]
    if missed:
        raise BudgetNotMet(f"no candidate met the budget on {', '.join(missed)}; see {config.out_dir}/report.md")


def resume(model: str | None, resume_dir: str, as_json: bool) -> None:
    """``--resume DIR`` repeats the stored run exactly: options that would change its answer are refused (not
    silently ignored), and a finished run is reported, not run again."""
    from edgeslim.config import SearchConfig

    if model:
        raise EdgeslimError("--resume DIR repeats the stored run; do not give MODEL as well")
    context = click.get_current_context()
    given = [f"--{name.replace('_', '-')}" for name in context.params
             if name not in ("resume_dir", "as_json", "model")
             and context.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE]
    if given:
        raise EdgeslimError(f"--resume repeats the stored run exactly, so it takes no {', '.join(given)}; to change "
                            f"them, start a new run with --out (the stored settings are in {resume_dir}/run.json)")
    if not Path(resume_dir).is_dir():
        raise EdgeslimError(f"--resume {resume_dir}: no such run directory")
    config = SearchConfig.load(Path(resume_dir) / "run.json")
    config.out_dir = resume_dir
    if (Path(resume_dir) / "manifest.json").is_file():
        from edgeslim.report import load_manifest

        # finished: nothing to resume; report it as it stands, with its exit status
        manifest = load_manifest(Path(resume_dir))
        if not manifest.get("multi_device"):
            finish(manifest, resume_dir, as_json)
            return
        from edgeslim.report import print_report

        click.echo(json.dumps(manifest, indent=2)) if as_json else print_report(Path(resume_dir), out_console)
        if manifest["status"] != "ok":
            raise BudgetNotMet(f"no candidate met the budget on every device; see {resume_dir}/report.md")
    elif len(config.profiles) > 1:
        run_multi_devices(config, config.profiles, as_json)
    else:
        run_search(config, as_json)
