"""Errors a user can act on. The CLI prints ``str(error)`` on one line and exits with ``exit_code``."""


class EdgeslimError(Exception):
    """Bad input or a failure with a one-line reason (exit status 1)."""

    exit_code = 1


class BudgetNotMet(EdgeslimError):
    """The search finished but no candidate met the budget (exit status 3)."""

    exit_code = 3
