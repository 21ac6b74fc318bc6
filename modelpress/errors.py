"""Errors the CLI turns into one line on stderr and a documented exit code.

Exit codes (stable, documented in the README):
  0  success
  1  internal error (a bug: rerun with --debug for the traceback)
  2  bad input or usage (missing file, wrong shapes, unknown preset, ...)
  3  a check failed (export parity outside tolerance, ...)
  4  an accuracy goal was not met (inc-tune): the best model found was saved anyway
  5  `modelpress gate`: the new model regressed against the baseline
  6  an artifact stayed below the fidelity floor (--min-fidelity) after every repair: nothing was
     written at the requested path (--keep-best keeps the best try under a name that says so)
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_BAD_INPUT = 2
EXIT_CHECK_FAILED = 3
EXIT_GOAL_NOT_MET = 4
EXIT_REGRESSION = 5  # `modelpress gate`: the new model regressed against the baseline
EXIT_BELOW_FLOOR = 6  # an artifact stayed below the fidelity floor after every repair


def first_line(e: BaseException, limit: int = 300) -> str:
    """An exception as one short line (libraries raise multi-line messages; ours are one line each)."""
    text = str(e).strip() or type(e).__name__
    return text.splitlines()[0][:limit]


class ModelpressError(Exception):
    """A problem with what the user gave us; shown as one line, never a traceback."""

    exit_code = EXIT_BAD_INPUT


class CheckFailed(ModelpressError):
    """The work ran, but a measured check (parity, budget) did not hold."""

    exit_code = EXIT_CHECK_FAILED


class GoalNotMet(ModelpressError):
    """An accuracy-aware search saved its best model, which misses the goal."""

    exit_code = EXIT_GOAL_NOT_MET


class BelowFidelityFloor(ModelpressError):
    """A technique's best artifact, repairs included, is less faithful to its source than the floor."""

    exit_code = EXIT_BELOW_FLOOR
