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
from typing import Any

import pluggy

hookspec = pluggy.HookspecMarker("edgeslim")


@hookspec
def edgeslim_register_techniques(register: Callable[[Any], None]) -> None:
    """Register compression techniques.

    :param register: call ``register(technique)`` with an instance of a
        :class:`edgeslim.technique.Technique` subclass. The technique's
        ``name`` keys it in plans (``plan["layers"][layer][knob]``) and in
        ``edgeslim plugins``.

    Not firstresult: every plugin's techniques are collected.
    """


@hookspec
def edgeslim_register_targets(register: Callable[[Any], None]) -> None:
    """Register backend targets (ONNX Runtime, OpenVINO, TensorRT, vendor runtimes).

    :param register: call ``register(target_class)`` with a subclass of
        :class:`edgeslim.target.Target`. A profile's ``[target] name`` selects
        it; its ``Settings`` pydantic model validates the rest of ``[target]``.

    A target whose runtime is not installed still registers; its
    ``available()`` says why it cannot be used. Not firstresult.
    """


@hookspec
def edgeslim_register_strategies(register: Callable[[Any], None]) -> None:
    """Register search strategies.

    :param register: call ``register(strategy_class)`` with a subclass of
        :class:`edgeslim.strategy.Strategy`; ``--strategy NAME`` selects it.

    Not firstresult.
    """


@hookspec
def edgeslim_candidate_measured(record: dict[str, Any]) -> None:
    """Event: a candidate was built, measured on the target and scored.

    :param record: the candidate record as stored in the run's store and in
        ``candidates.jsonl``: ``key``, ``plan``, ``status``, ``latency``
        (the agent's statistics, or ``None``), ``metric``, ``artifact``,
        ``note``. Plugins may log or export it; they must not modify it.

    Called for every candidate, including ones taken from the store on
    ``--resume`` (then ``record["from_store"]`` is true). Return value ignored.
    """


@hookspec
def edgeslim_search_finished(manifest: dict[str, Any]) -> None:
    """Event: a search finished and its ``manifest.json`` was written.

    :param manifest: the manifest exactly as written. Return value ignored.
    """
