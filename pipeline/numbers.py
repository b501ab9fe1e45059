"""Number grammar: German and English numerals and the interval a written amount stands for.

Pure functions. ``parse_numeral`` reads the digits as written ("14,8", "1.250",
"1,250.5", "1 250"); ``interval`` turns a numeral, a scale and the wording's
bound into ``[low, high]`` (see docs/figures.md for the semantics).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

# Interval bands. Set by the dev split of tests/data/figures (scripts/eval_figures.py);
# they change what drift calls "consistent", so re-run the figures and drift gates after
# changing them.
NEAR_BAND = Decimal("0.10")  # "knapp", "nearly", "gut", "just over": within 10 % of the value
APPROX_BAND = Decimal("0.05")  # "rund", "about": at least ±5 %, more when the rounding is coarser

_GROUP_CHARS = "'’\u202f\u00a0 "


@dataclass(frozen=True)
class Numeral:
    """Digits as written: the value and how many decimals the writer gave."""

    value: Decimal
    decimals: int

    def scaled(self, factor: Decimal) -> Decimal:
        return self.value * factor


def _is_group_run(parts: list[str]) -> bool:
    """True when ``parts`` read as 1.250.000: a 1-3 digit head, then 3-digit groups."""
    head, *rest = parts
    return 1 <= len(head) <= 3 and bool(rest) and all(len(p) == 3 for p in rest)


def parse_numeral(raw: str, decimal_sep: str) -> Numeral | None:
    """Read digits with separators in the convention of a language.

    ``decimal_sep`` is "," for German, "." for English; it only decides the
    ambiguous case of one separator followed by exactly three digits
    ("1.250" is 1250 in German, 1.25 in English). Returns None for shapes no
    amount has (dates such as "13.06.2025", "1.2.3").
    """
    s = raw
    for ch in _GROUP_CHARS:
        if ch in s:
            parts = s.split(ch)
            if not _is_group_run([parts[0], *parts[1:-1], parts[-1].split(".")[0].split(",")[0]]):
                return None
            s = s.replace(ch, "")
    dots, commas = s.count("."), s.count(",")
    try:
        if dots == 0 and commas == 0:
            return Numeral(Decimal(s), 0)
        if dots and commas:
            dec = "." if s.rfind(".") > s.rfind(",") else ","
            grp = "," if dec == "." else "."
            if s.count(dec) != 1:
                return None
            int_part, frac = s.split(dec)
            if not _is_group_run(int_part.split(grp)):
                return None
            return Numeral(Decimal(int_part.replace(grp, "") + "." + frac), len(frac))
        sep = "." if dots else ","
        parts = s.split(sep)
        if len(parts) > 2:
            if not _is_group_run(parts):
                return None
            return Numeral(Decimal("".join(parts)), 0)
        int_part, frac = parts
        if len(frac) == 3 and int_part != "0" and len(int_part) <= 3 and sep != decimal_sep:
            return Numeral(Decimal(int_part + frac), 0)
        return Numeral(Decimal(int_part + "." + frac), len(frac))
    except InvalidOperation:
        return None


def precision_step(num: Numeral, factor: Decimal) -> Decimal:
    """The unit of the last digit written, in base units (14,8 Mrd. -> 1e8)."""
    return Decimal(1).scaleb(-num.decimals) * factor


def rounding_step(num: Numeral, factor: Decimal) -> Decimal:
    """The unit of the last non-zero digit ("900 Mio." -> 1e8): how coarsely it was rounded."""
    if num.value == 0:
        return precision_step(num, factor)
    exp = -num.decimals
    digits = num.value.scaleb(num.decimals).to_integral_value()
    while digits % 10 == 0:
        digits //= 10
        exp += 1
    return Decimal(1).scaleb(exp) * factor


def interval(
    num: Numeral, factor: Decimal, qualifier: str, bound: str = "open"
) -> tuple[float, float]:
    """The interval the wording allows, in base units.

    ``qualifier`` is one of exact/approx/at_least/at_most; ``bound`` is
    ``open`` ("über": [v, inf); "bis zu": [0, v]) or ``near`` ("knapp": just
    below v; "gut": just above v).
    """
    v = num.scaled(factor)
    if qualifier == "at_least":
        if bound == "near":
            return float(v), float(v * (1 + NEAR_BAND))
        return float(v), math.inf
    if qualifier == "at_most":
        if bound == "near":
            return float(v * (1 - NEAR_BAND)), float(v)
        return 0.0, float(v)
    if qualifier == "approx":
        half = max(rounding_step(num, factor) / 2, abs(v) * APPROX_BAND)
        return float(v - half), float(v + half)
    half = precision_step(num, factor) / 2
    return float(v - half), float(v + half)
