"""Optuna strategies: TPE (``--strategy tpe``) and NSGA-II (``--strategy nsga2``) over every knob.

Each trial picks one level per knob (per layer, model-wide, the INT8 encoding and the target's own knobs),
the session builds and measures it on the device, and the trial reports the metric (TPE: maximise it with
the latency budget as a constraint; NSGA-II: the metric and the measured latency as two objectives, same
constraint, for a Pareto front). The study lives in ``--storage URL`` (default: SQLite in the run
directory), named after the run's content hash, so a resumed run continues the same study and the
session's store answers every plan already measured without measuring it again. Several workers (hosts,
each with its own boards) may share one study through PostgreSQL: a plan any of them finished is taken from
the study instead of being measured again.
"""

from __future__ import annotations

import abc
import hashlib
import logging
import time
import warnings
from typing import Any, ClassVar

from edgeslim import hookimpl
from edgeslim.errors import EdgeslimError
from edgeslim.plan import Plan, empty_plan, set_knob
from edgeslim.settings import module_available
from edgeslim.strategy import OfferedKnob, SearchAPI, Strategy, TrialsExhausted

#: constraint value of a trial whose latency could not be measured (failed, not faster than the baseline)
UNMEASURED = 1e9
# tries at opening the storage and the study when several workers start on it at once (waits 0.5, 1.5, ... s)
_OPEN_ATTEMPTS = 5


def _lost_a_creation_race(exc: Exception) -> bool:
    """Whether ``exc`` is what a database answers a worker that created a table or study another worker had
    just created (SQLAlchemy's wrappers of the driver's unique-violation and duplicate-object errors)."""
    return type(exc).__name__ in ("IntegrityError", "ProgrammingError", "InternalError")


class OptunaStrategy(Strategy):
    sampler_name: ClassVar[str] = ""

    @classmethod
    def available(cls) -> tuple[bool, str]:
        return module_available("optuna", "pip install optuna")

    @abc.abstractmethod
    def _sampler(self, seed: int, constraints: Any) -> Any:
        """The Optuna sampler (TPE, NSGA-II); ``constraints`` is None where trials carry their own."""

    def _multi_objective(self) -> bool:
        return False

    @staticmethod
    def _storage(url: str, grace_s: float) -> Any:
        """An RDB storage whose workers send heartbeats: a trial whose worker died (killed mid-measurement,
        host lost) is failed after ``grace_s`` seconds by whichever worker looks next, and retried with the
        same parameters."""
        import inspect

        import optuna

        heartbeat = max(1, int(grace_s / 3))
        # Optuna 4.9+ renamed the callback and its argument (the old ones warn on every run); 4.x before
        # that knows only the old names
        accepted = inspect.signature(optuna.storages.RDBStorage).parameters
        renamed = "heartbeat_stale_trial_callback" in accepted and hasattr(optuna.storages,
                                                                           "RetryHeartbeatStaleTrialCallback")
        for attempt in range(_OPEN_ATTEMPTS):
            try:
                with warnings.catch_warnings():
                    # heartbeats and their retry callback are "experimental" in every Optuna since 2.8 (the
                    # interface we use is stable); the warning would reach every user
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    if renamed:
                        callback = {"heartbeat_stale_trial_callback":
                                    optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=2)}
                    else:
                        callback = {"failed_trial_callback": optuna.storages.RetryFailedTrialCallback(max_retry=2)}
                    return optuna.storages.RDBStorage(
                        url, heartbeat_interval=heartbeat, grace_period=max(int(grace_s), heartbeat + 1),
                        **callback)
            except Exception as exc:  # noqa: BLE001 (a bad URL raises from SQLAlchemy or Optuna)
                # workers starting together on an empty database race to create Optuna's tables (PostgreSQL
                # answers the loser's CREATE TABLE with a unique violation in pg_type): the loser retries and
                # finds the tables made; any other error is the user's URL or server
                if attempt == _OPEN_ATTEMPTS - 1 or not _lost_a_creation_race(exc):
                    raise EdgeslimError(f"--storage {url}: cannot open it ({type(exc).__name__}: "
                                        f"{str(exc).splitlines()[0]})") from None
                time.sleep(0.5 + attempt)
        raise AssertionError("unreachable: the last attempt raises")

    def _open_study(self, search: SearchAPI, directions: list[str], per_trial: bool) -> Any:
        """The run's study in its storage, named after what is searched, so workers and resumed runs share it."""
        import optuna

        url = search.storage_url or f"sqlite:///{search.work_dir / 'optuna.sqlite'}"
        storage = self._storage(url, search.trial_grace_s)
        study_name = f"edgeslim-{self.name}-{hashlib.sha256(search.run_id.encode()).hexdigest()[:16]}"

        def constraints(trial: optuna.trial.FrozenTrial) -> list[float]:
            return [trial.user_attrs.get("constraint", UNMEASURED)]

        # Optuna 5 takes constraints from the trial (set_constraint); 4 from the sampler's constraints_func
        sampler = self._sampler(seed=0, constraints=None if per_trial else constraints)
        for attempt in range(_OPEN_ATTEMPTS):
            try:
                study = optuna.create_study(study_name=study_name, storage=storage, load_if_exists=True,
                                            directions=directions, sampler=sampler)
                search.note(f"{self.name}: study {study_name} in {url.split('://')[0]} storage")
                return study
            except Exception as exc:  # noqa: BLE001 (SQLAlchemy raises many kinds)
                # workers starting together race to create the study: the loser retries and loads it
                if attempt == _OPEN_ATTEMPTS - 1 or not _lost_a_creation_race(exc):
                    raise EdgeslimError(f"--storage {url}: cannot open the study "
                                        f"({type(exc).__name__}: {str(exc).splitlines()[0]})") from None
                time.sleep(0.5 + attempt)
        raise AssertionError("unreachable: the last attempt raises")

    @staticmethod
    def _plan_of(trial: Any, knobs: list[OfferedKnob], variants: dict[str, list[dict[str, Any]]]) -> Plan:
        plan = empty_plan()
        for name, options in variants.items():
            choice = trial.suggest_categorical(f"{name}:variant", list(range(len(options))))
            plan["model"].update(options[choice])
        for offered in knobs:
            knob = offered.knob
            level = trial.suggest_categorical(f"{knob.layer or 'model'}:{knob.name}", list(knob.levels))
            plan = set_knob(plan, knob.layer, knob.name, level, knob.levels[0])
        return plan

    def run(self, search: SearchAPI) -> None:
        import optuna

        optuna.logging.set_verbosity(logging.WARNING)
        knobs = search.knobs()
        if not knobs:
            search.note("no technique offers a knob for this model")
            return
        variants = search.model_variants()
        # the table is built from the empty plan's model-wide settings: per-layer knobs are what it ranks
        search.use_latency_table(empty_plan(), [o.knob for o in knobs if o.reduces_latency])
        budget, multi = search.budget_ms, self._multi_objective()
        directions = ["maximize" if search.higher_is_better else "minimize"] + (["minimize"] if multi else [])
        worst = float("-inf") if directions[0] == "maximize" else float("inf")
        per_trial = hasattr(optuna.trial.Trial, "set_constraint")
        study = self._open_study(search, directions, per_trial)

        def report(trial: optuna.Trial, constraint: float, value: float, latency: float) -> Any:
            trial.set_user_attr("constraint", constraint)
            if per_trial:
                trial.set_constraint("latency_over_budget_ms", constraint)
            return (value, latency) if multi else value

        def objective(trial: optuna.Trial) -> Any:
            plan = self._plan_of(trial, knobs, variants)
            trial.set_user_attr("worker", search.worker)
            trial.set_user_attr("plan", plan)
            for done in trial.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
                if done.params == trial.params and "key" in done.user_attrs:
                    # another worker (or an earlier run) already measured this plan: its result, not a new one
                    trial.set_user_attr("key", done.user_attrs["key"])
                    trial.set_user_attr("reused_from", done.number)
                    return report(trial, done.user_attrs["constraint"], done.values[0],
                                  done.values[1] if multi else 0.0)
            if not search.worth_measuring(plan):
                # the latency table puts it far over the budget: told to the sampler as predicted, not measured
                record = search.skip(plan, purpose=f"{self.name}:{trial.number}")
                predicted = record.details["predicted_ms"]
                trial.set_user_attr("key", record.key)
                trial.set_user_attr("predicted_only", True)
                return report(trial, predicted - budget, worst, predicted)
            try:
                record = search.measure(plan, purpose=f"{self.name}:{trial.number}")
            except TrialsExhausted:
                trial.study.stop()
                raise optuna.TrialPruned() from None
            latency = search.latency_of(record)
            trial.set_user_attr("key", record.key)
            constraint = UNMEASURED if latency is None or record.status == "not_faster" else latency - budget
            if constraint <= 0 and search.over_other_budgets(record):
                constraint = 1.0  # within the latency budget but too large (size or memory): infeasible
            value = record.metric if record.metric is not None else worst
            return report(trial, constraint, value, latency if latency is not None else UNMEASURED)

        remaining = search.trials_left()
        if remaining > 0:
            study.optimize(objective, n_trials=remaining, catch=())
        self._measure_study_best(search, study, directions[0] == "maximize")

    @staticmethod
    def _measure_study_best(search: SearchAPI, study: Any, maximize: bool, top: int = 2) -> None:
        """The best plans other workers found, measured on this worker's device too: its answer is chosen
        from the whole study, yet only from models it has measured and verified itself."""
        import optuna

        mine = search.worker
        others = [t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
                  if t.user_attrs.get("worker") != mine and "plan" in t.user_attrs
                  and not t.user_attrs.get("predicted_only") and "reused_from" not in t.user_attrs
                  and t.user_attrs.get("constraint", UNMEASURED) <= 0]
        others.sort(key=lambda t: t.values[0], reverse=maximize)
        for t in others[:top]:
            record = search.measure(t.user_attrs["plan"], counts_as_trial=False,
                                    purpose=f"study-best: trial {t.number} of {t.user_attrs['worker']}")
            search.note(f"study trial {t.number} (another worker's, within its budget there) measured "
                        f"here: {record.status}")


class TPEStrategy(OptunaStrategy):
    name = "tpe"
    description = "Optuna TPE: maximise the metric, measured latency within the budget as a constraint"

    def _sampler(self, seed: int, constraints: Any) -> Any:
        import optuna

        extra = {"constraints_func": constraints} if constraints else {}
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, n_startup_trials=5, **extra)


class NSGA2Strategy(OptunaStrategy):
    name = "nsga2"
    description = "Optuna NSGA-II: metric and measured latency as two objectives, the budget as a constraint"

    def _sampler(self, seed: int, constraints: Any) -> Any:
        import optuna

        extra = {"constraints_func": constraints} if constraints else {}
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=8, **extra)

    def _multi_objective(self) -> bool:
        return True


@hookimpl
def edgeslim_register_strategies(register):
    register(TPEStrategy)
    register(NSGA2Strategy)
