"""Claims: a paper's prediction next to the measured value, with a tolerance and a verdict.

Experiments return a list of :class:`Claim` from their saved tables; ``dynamics verify`` collects
them into ``results/VERIFICATION.md`` and ``results/verification.csv``.  A tolerance is set from the
regime the theory states, before looking at the measurement, and is never widened to make a claim
pass: a FAIL is a finding, explained in ``note``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Literal

COLUMNS = ["experiment", "claim", "reference", "predicted", "measured", "rel_error", "tolerance", "status"]
ROW_COLUMNS = COLUMNS + ["statement", "note"]  # what claims.csv holds


@dataclasses.dataclass(frozen=True)
class Claim:
    experiment: str
    claim: str  # short id, e.g. "thm2-distinct-up"
    statement: str  # one sentence a reader can check
    reference: str  # "Tian et al. 2023, Thm. 2(a)"
    predicted: float
    measured: float
    tolerance: float
    status: Literal["PASS", "FAIL"]
    rel_error: float = math.nan
    note: str = ""

    def row(self) -> dict:
        return {k: getattr(self, k) for k in COLUMNS} | {"statement": self.statement, "note": self.note}


def rel_error(predicted: float, measured: float) -> float:
    """|measured - predicted| / |predicted| (absolute error when the prediction is 0)."""
    if not (math.isfinite(predicted) and math.isfinite(measured)):
        return math.nan
    scale = abs(predicted)
    return abs(measured - predicted) / scale if scale > 0 else abs(measured)


def close(experiment: str, claim: str, statement: str, reference: str, predicted: float,
          measured: float, tolerance: float, note: str = "") -> Claim:
    """PASS when the relative error of ``measured`` against ``predicted`` is within ``tolerance``."""
    err = rel_error(predicted, measured)
    ok = math.isfinite(err) and err <= tolerance
    return Claim(experiment, claim, statement, reference, float(predicted), float(measured),
                 float(tolerance), "PASS" if ok else "FAIL", err, note)


def at_least(experiment: str, claim: str, statement: str, reference: str, threshold: float,
             measured: float, note: str = "") -> Claim:
    """PASS when ``measured >= threshold`` (a sign, a fraction or a correlation that must be large)."""
    ok = math.isfinite(measured) and measured >= threshold
    return Claim(experiment, claim, statement, reference, float(threshold), float(measured),
                 0.0, "PASS" if ok else "FAIL", math.nan, note)


def within(experiment: str, claim: str, statement: str, reference: str, low: float, high: float,
           measured: float, note: str = "") -> Claim:
    """PASS when ``low <= measured <= high`` (a fitted exponent inside a band).

    ``predicted`` is the band's centre and ``tolerance`` its half-width relative to the centre.
    """
    centre = (low + high) / 2
    ok = math.isfinite(measured) and low <= measured <= high
    return Claim(experiment, claim, statement, reference, centre, float(measured),
                 (high - low) / 2 / abs(centre) if centre else (high - low) / 2,
                 "PASS" if ok else "FAIL", rel_error(centre, measured), note)
