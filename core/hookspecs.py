"""The whole plugin contract of edgeslim.

A plugin is a module (or object) with functions decorated by
``edgeslim.hookimpl`` whose names match the hooks below. Built-in plugins
(``edgeslim.plugins.*``, ``edgeslim.targets.*``) are registered exactly like
third-party ones, which are found through the ``edgeslim`` entry-point group::

    [project.entry-points.edgeslim]
    my_target = "my_package.my_module"

Registry hooks receive a ``register`` callback; call it once per thing the
plugin provides. Names must be unique across all plugins: a duplicate is a
startup error that names both plugins.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from edgeslim.recovery import Recovery
    from edgeslim.strategy import Strategy
    from edgeslim.target import Target
    from edgeslim.technique import Technique

hookspec = pluggy.HookspecMarker("edgeslim")


@hookspec
def edgeslim_register_techniques(register: Callable[[Technique], None]) -> None:
    """Register compression techniques.

    :param register: call ``register(technique)`` with an instance of a
        :class:`edgeslim.technique.Technique` subclass. The technique's
        ``name`` keys it in plans (``plan["layers"][layer][knob]``) and in
        ``edgeslim plugins``.

    Not firstresult: every plugin's techniques are collected.
    """


@hookspec
def edgeslim_register_targets(register: Callable[[type[Target]], None]) -> None:
    """Register backend targets (ONNX Runtime, OpenVINO, TensorRT, vendor runtimes).

    :param register: call ``register(target_class)`` with a subclass of
        :class:`edgeslim.target.Target`. A profile's ``[target] name`` selects
        it; its ``Settings`` pydantic model validates the rest of ``[target]``.

    A target whose runtime is not installed still registers; its
    ``available()`` says why it cannot be used. Not firstresult.
    """


@hookspec
def edgeslim_register_strategies(register: Callable[[type[Strategy]], None]) -> None:
    """Register search strategies.

    :param register: call ``register(strategy_class)`` with a subclass of
        :class:`edgeslim.strategy.Strategy`; ``--strategy NAME`` selects it.
        A strategy sees the run only through :class:`edgeslim.strategy.SearchAPI`.

    Not firstresult.
    """


@hookspec
def edgeslim_register_recoveries(register: Callable[[type[Recovery]], None]) -> None:
    """Register recovery methods (fine-tuning, distillation, least-squares reconstruction).

    :param register: call ``register(recovery_class)`` with a subclass of
        :class:`edgeslim.recovery.Recovery`; ``--recovery NAME`` selects it and
        ``--recovery-option KEY=VALUE`` fills its ``Settings``. A recovery with
        ``needs_training_data = False`` serves bare ONNX models.

    Not firstresult.
    """


@hookspec
def edgeslim_candidate_measured(record: dict[str, Any]) -> None:
    """Event: a candidate was built, measured on the target and scored.

    :param record: ``edgeslim.records.CandidateRecord.to_dict()``, as in
        ``candidates.jsonl``: ``key``, ``plan``, ``purpose``, ``status``,
        ``latency`` (the agent's statistics, or ``None``), ``metric``,
        ``artifact``, ``note``, ``details``. A copy: plugins may log or
        export it.

    Called for every candidate, including ones taken from the store on
    ``--resume`` (then ``record["from_store"]`` is true). Return value ignored.
    """


@hookspec
def edgeslim_search_finished(manifest: dict[str, Any]) -> None:
    """Event: a search (or ``edgeslim apply``) finished and its ``manifest.json`` was written.

    :param manifest: the manifest exactly as written
        (:class:`edgeslim.records.Manifest`); ``manifest["status"]`` is
        ``"ok"`` only when the answer met the budget when re-measured.
        Return value ignored.
    """
