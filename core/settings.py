"""Turning pydantic validation errors into the one-line ``field: message`` users see."""

from __future__ import annotations

from pydantic import ValidationError


def describe_validation_error(error: ValidationError, prefix: str = "") -> str:
    """``budget.latency_ms: Input should be greater than 0; target.thread: unknown field``."""
    parts = []
    for item in error.errors():
        location = ".".join(str(p) for p in item["loc"])
        if prefix:
            location = f"{prefix}.{location}" if location else prefix
        message = item["msg"]
        if item["type"] == "extra_forbidden":
            message = "unknown field (check the spelling; see `edgeslim profiles local-cpu` for the format)"
        parts.append(f"{location}: {message}" if location else message)
    return "; ".join(parts)
