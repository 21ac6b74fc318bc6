"""Units for budgets and limits, parsed in one place so every command means the same thing by the same text.

Accuracy budgets (how much top-1 a candidate, or a new model, may lose against its reference):

    '0.5pt', '0.5 pt', '0.5pp', '0.5 points'   absolute: percentage points of top-1 (0.5 pt = a fraction 0.005)
    '1%'                                       relative: 1% of the reference's (the baseline's) own accuracy
    a bare number                              what that place has always meant, for compatibility:
                                                 a study recipe's selection.max_accuracy_drop: a fraction
                                                   (0.01 = 1 pt)
                                                 `gate --max-accuracy-drop`: points (0.5 = 0.5 pt)

Latency (and other) limits given as a percentage, `parse_percent`: '5%' or a fraction 0.05 -- a bare number
is always a fraction, and a bare number of 1 or more is refused (write '5%', '100%'): nothing is guessed.

Everything a command prints or records states its unit (`format_accuracy_budget`, `format_percent`), and
what it prints parses back to the same value.
"""

from __future__ import annotations

import math
import numbers
import re
from typing import Any, Literal

from modelpress.errors import ModelpressError
from modelpress.yamlsafe import short

BARE_FRACTION = "fraction"
BARE_POINTS = "points"

_NUMBER = r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?"
_BUDGET = re.compile(rf"^\s*({_NUMBER})\s*(pts?|points?|pp|%)?\s*$", re.IGNORECASE)
_PERCENT = re.compile(rf"^\s*({_NUMBER})\s*(%)?\s*$")
_POINTS_SUFFIX = re.compile(rf"^\s*{_NUMBER}\s*(pts?|points?|pp)\s*$", re.IGNORECASE)


def _number(value: Any) -> float | None:
    """A real number given as a number (not a bool), or None."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    try:
        return float(value)
    except OverflowError:  # an int too large for a float
        return math.inf


def parse_accuracy_budget(value: Any, where: str = "max_accuracy_drop", *,
                          bare: Literal["fraction", "points"] = BARE_FRACTION,
                          reference: str = "the reference's") -> tuple[float, bool]:
    """An accuracy budget -> (fraction, relative).

    `fraction` is a share of top-1 (0.005 = 0.5 pt) when `relative` is False, or a share of the reference's
    own accuracy (0.01 = 1% of it) when True. '0.5pt' / '0.5 points' are points, '1%' is relative; a bare
    number (a YAML number, or a string without a unit) is a fraction (`bare="fraction"`, study recipes) or
    points (`bare="points"`, `gate --max-accuracy-drop`). `where` names the setting in the one-line error
    (e.g. 'study.yaml:9: max_accuracy_drop' or '--max-accuracy-drop')."""
    bare_hint = ("a bare number of points such as 0.5" if bare == BARE_POINTS else
                 "a bare fraction such as 0.01 (= 1 pt)")
    hint = f"write 0.5pt (points of top-1), 1% (of {reference} accuracy) or {bare_hint}"
    num = _number(value)
    unit = None
    if num is None:
        if not isinstance(value, str):
            raise ModelpressError(f"{where} must be a number >= 0 with an optional unit, got {short(value)}: {hint}")
        m = _BUDGET.match(value) if len(value) <= 64 else None
        if m is None:
            raise ModelpressError(f"{where} must be a number >= 0 with an optional unit, got {short(value)}: {hint}")
        num, unit = float(m.group(1)), (m.group(2) or "").lower() or None
    if not math.isfinite(num):
        raise ModelpressError(f"{where} must be a finite number, got {short(value)}: {hint}")
    if num < 0:
        raise ModelpressError(f"{where} cannot be negative, got {short(value)}: {hint}")
    if unit == "%":
        if num > 100:
            raise ModelpressError(f"{where} {short(value)} is more than 100% of {reference} accuracy: a relative "
                                  "budget is at most 100%")
        return num / 100, True
    points = unit is not None or bare == BARE_POINTS
    if points:
        if num > 100:
            raise ModelpressError(f"{where} {short(value)} is more than 100 points: top-1 accuracy runs from 0 to "
                                  "100 points")
        return num / 100, False
    if num > 1:
        raise ModelpressError(f"{where} {short(value)} is a fraction of top-1 over 1 (more than 100 points): "
                              f"for {num:g} points write '{num:g}pt', for {num:g}% of {reference} accuracy "
                              f"write '{num:g}%'")
    return num, False


def stated_unit(value: Any) -> str | None:
    """The unit written with an accuracy budget: 'pt', '%' or None (a bare number, or not a budget at all)."""
    m = _BUDGET.match(value) if isinstance(value, str) and len(value) <= 64 else None
    unit = (m.group(2) or "").lower() if m else ""
    return None if not unit else "%" if unit == "%" else "pt"


def _g(x: float) -> str:
    """A short decimal without float noise: 0.1 * 100 -> '10', not '10.000000000000002'."""
    return f"{round(x, 10):.12g}"


def format_accuracy_budget(fraction: float, relative: bool) -> str:
    """The budget with its unit, in the form parse_accuracy_budget reads back: '0.5pt' or '1%'."""
    return f"{_g(fraction * 100)}%" if relative else f"{_g(fraction * 100)}pt"


def describe_accuracy_budget(fraction: float, relative: bool, reference: str = "the reference's") -> str:
    """For people: '0.5 pt of top-1' or '1% of the reference's top-1'."""
    return f"{_g(fraction * 100)}% of {reference} top-1" if relative else f"{_g(fraction * 100)} pt of top-1"


def parse_percent(text: Any, where: str | None = None) -> float:
    """A limit given as a percentage -> a fraction: '5%' -> 0.05, '0.05' or 0.05 -> 0.05.

    A bare number is always a fraction; one over 1 is refused with a one-line error suggesting 'N%' (it
    could mean N% or N x 100%: nothing is guessed), and so is a bare 1 (1% or 100%?). Negative, NaN and
    infinite values are refused too."""
    label = f"percentage {short(text)}" + (f" for {where}" if where else "")
    num = _number(text)
    pct = False
    if num is None:
        if isinstance(text, str) and len(text) <= 64 and _POINTS_SUFFIX.match(text):
            raise ModelpressError(f"bad {label}: this limit is a percentage ('5%') or a fraction (0.05), not points")
        m = _PERCENT.match(text) if isinstance(text, str) and len(text) <= 64 else None
        if m is None:
            raise ModelpressError(f"bad {label}: use e.g. 5% or 0.05")
        num, pct = float(m.group(1)), bool(m.group(2))
    if not math.isfinite(num):
        raise ModelpressError(f"bad {label}: it must be a finite number, e.g. 5% or 0.05")
    if num < 0:
        raise ModelpressError(f"bad {label}: a limit cannot be negative")
    if pct:
        return num / 100
    if num > 1:
        raise ModelpressError(f"bad {label}: a bare number is a fraction (0.05 = 5%), and {num:g} would be "
                              f"{_g(num * 100)}%; for {num:g} percent write '{num:g}%'")
    if num == 1:  # 100% or 1%? the one bare value people write meaning either: refused, never guessed
        raise ModelpressError(f"bad {label}: a bare 1 could mean 1% or 100% (a bare number is a fraction); "
                              "write '1%' or '100%'")
    return num


def format_percent(fraction: float) -> str:
    """A fraction as the percentage parse_percent reads back: 0.05 -> '5%'."""
    return f"{_g(fraction * 100)}%"
