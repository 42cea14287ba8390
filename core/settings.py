"""Small helpers shared by plugins: one-line validation errors, optional-dependency checks."""

from __future__ import annotations

from pydantic import ValidationError


def describe_validation_error(error: ValidationError, prefix: str = "",
                              unknown_hint: str = "see `edgeslim profiles local-cpu` for the format") -> str:
    """``budget.latency_ms: Input should be greater than 0; target.thread: unknown field``."""
    parts = []
    for item in error.errors():
        location = ".".join(str(p) for p in item["loc"])
        if prefix:
            location = f"{prefix}.{location}" if location else prefix
        message = item["msg"]
        if item["type"] == "extra_forbidden":
            message = f"unknown field (check the spelling; {unknown_hint})"
        parts.append(f"{location}: {message}" if location else message)
    return "; ".join(parts)


def module_installed(module: str) -> bool:
    """Whether ``module`` is installed, without importing it (some, like NNCF, take seconds to import)."""
    import importlib.util

    return importlib.util.find_spec(module) is not None


def module_available(module: str, install: str) -> tuple[bool, str]:
    """(True, "module VERSION") when ``module`` imports, else (False, why and how to install it).

    Plugins answer ``available()`` with this: optional backends import lazily, and `edgeslim plugins`
    shows the reason next to anything that cannot be used."""
    import importlib

    try:
        imported = importlib.import_module(module)
    except ImportError as exc:
        return False, f"{module} not importable ({exc}); {install}"
    version = getattr(imported, "__version__", "")
    return True, f"{module} {version}".strip()
