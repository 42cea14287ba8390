"""The contract of a search strategy: propose plans, read measured (latency, metric) back, stop."""

from __future__ import annotations

import abc
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from edgeslim.search import SearchSession


class TrialsExhausted(Exception):
    """Raised by ``SearchSession.evaluate`` when ``--trials`` measured candidates have been used."""


class Strategy(abc.ABC):
    """Subclasses set ``name`` and ``description`` and implement :meth:`run`.

    ``run`` calls ``session.score(plan)`` (host-only scoring, cheap) and
    ``session.evaluate(plan)`` (build, measure on the target, score) as it
    likes; the session stores every result, enforces ``--trials`` by raising
    :class:`TrialsExhausted`, and picks and verifies the best candidate
    afterwards. A strategy never needs to remember results itself: asking
    again for a plan already evaluated costs nothing (and on ``--resume``,
    nothing measured before is measured again).
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""

    @abc.abstractmethod
    def run(self, session: SearchSession) -> None:
        """Propose and evaluate plans until done (or until TrialsExhausted)."""
