"""The plugin host: one pluggy manager, built-ins registered like third-party plugins."""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any

import pluggy

from edgeslim import hookspecs
from edgeslim.errors import EdgeslimError
from edgeslim.recovery import Recovery
from edgeslim.strategy import Strategy
from edgeslim.target import Target
from edgeslim.technique import Technique

DEFAULT_PLUGINS = (
    "edgeslim.plugins.pruning",
    "edgeslim.plugins.clustering",
    "edgeslim.plugins.attention",
    "edgeslim.plugins.quantization",
    "edgeslim.plugins.weight_quantization",
    "edgeslim.plugins.qat",
    "edgeslim.plugins.lowrank",
    "edgeslim.plugins.distillation",
    "edgeslim.plugins.recovery",
    "edgeslim.plugins.greedy",
    "edgeslim.plugins.knapsack",
    "edgeslim.plugins.optuna_search",
    "edgeslim.targets.onnxruntime",
    "edgeslim.targets.openvino",
    "edgeslim.targets.tensorrt",
)

ENTRY_POINT_GROUP = "edgeslim"


@dataclass
class Registry:
    """Everything the loaded plugins provide, keyed by name, with the providing plugin."""

    techniques: dict[str, Technique] = field(default_factory=dict)
    targets: dict[str, type[Target]] = field(default_factory=dict)
    strategies: dict[str, type[Strategy]] = field(default_factory=dict)
    recoveries: dict[str, type[Recovery]] = field(default_factory=dict)
    provided_by: dict[tuple[str, str], str] = field(default_factory=dict)


_manager: pluggy.PluginManager | None = None


def get_plugin_manager(extra_plugins: tuple[Any, ...] = ()) -> pluggy.PluginManager:
    """The process-wide plugin manager, created on first use."""
    global _manager
    if _manager is None:
        pm = pluggy.PluginManager("edgeslim")
        pm.add_hookspecs(hookspecs)
        for module_name in DEFAULT_PLUGINS:
            pm.register(importlib.import_module(module_name), name=module_name)
        try:
            pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
        except Exception as exc:
            raise EdgeslimError(f"a plugin in entry-point group {ENTRY_POINT_GROUP!r} failed to load: "
                                f"{type(exc).__name__}: {exc}") from None
        _check_pending(pm)
        _manager = pm
    for plugin in extra_plugins:
        if not _manager.is_registered(plugin):
            _manager.register(plugin)
            _check_pending(_manager)
    return _manager


def _check_pending(pm: pluggy.PluginManager) -> None:
    """A misspelled hook name in any plugin is a startup error, not a silent no-op."""
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        pm.unregister(exc.plugin)
        raise EdgeslimError(f"plugin {pm.get_name(exc.plugin) or exc.plugin}: {exc}; known hooks: "
                            + ", ".join(sorted(h for h in dir(pm.hook) if h.startswith("edgeslim_")))) from None


def reset_plugin_manager() -> None:
    """Forget the manager (tests register throwaway plugins and then clean up)."""
    global _manager
    _manager = None


def _collect(pm: pluggy.PluginManager, hook_name: str, kind: str, registry: Registry) -> dict[str, Any]:
    found: dict[str, Any] = {}
    hook = getattr(pm.hook, hook_name)
    for impl in hook.get_hookimpls():
        plugin_name = impl.plugin_name

        def register(thing: Any, _plugin: str = plugin_name) -> None:
            name = getattr(thing, "name", None)
            if not name:
                raise EdgeslimError(f"plugin {_plugin} registered a {kind} without a name")
            if name in found:
                other = registry.provided_by[(kind, name)]
                raise EdgeslimError(
                    f"{kind} name {name!r} is registered twice: by plugin {other} and by plugin {_plugin}; "
                    "uninstall or rename one of them"
                )
            found[name] = thing
            registry.provided_by[(kind, name)] = _plugin

        impl.function(register=register)
    return found


def load_registry(extra_plugins: tuple[Any, ...] = ()) -> Registry:
    """Ask every plugin what it provides."""
    pm = get_plugin_manager(extra_plugins)
    registry = Registry()
    registry.techniques = _collect(pm, "edgeslim_register_techniques", "technique", registry)
    registry.targets = _collect(pm, "edgeslim_register_targets", "target", registry)
    registry.strategies = _collect(pm, "edgeslim_register_strategies", "strategy", registry)
    registry.recoveries = _collect(pm, "edgeslim_register_recoveries", "recovery", registry)
    return registry
