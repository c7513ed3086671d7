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


# ---------------------------------------------------------------------------------------------
# Pre-registered claims (issue 13).  The legacy helpers above are being migrated to this API.
# ---------------------------------------------------------------------------------------------

import hashlib
import json
from typing import Any, Mapping, Sequence

from .stats import Band, Estimate, verdict as _verdict

Kind = Literal["reproduction", "consistency"]
VERDICTS = ("PASS", "FAIL", "INCONCLUSIVE", "STALE")
CLAIM_COLUMNS = ["experiment", "claim", "kind", "reference", "prediction", "estimate", "ci_low", "ci_high",
                 "n", "verdict", "mde"]
CLAIM_ROW_COLUMNS = CLAIM_COLUMNS + ["method", "excluded", "seeds_needed", "band_low", "band_high", "statement",
                                     "note", "fingerprint", "definition"]


@dataclasses.dataclass(frozen=True)
class ClaimSpec:
    """A claim's pre-registered definition: what is predicted, by whom, and which inputs feed it.

    ``kind`` is ``reproduction`` (a paper's prediction tested against a measurement on which it could
    fail) or ``consistency`` (the code agrees with an identity, a closed form it also computes, a second
    solver, or its own construction).  ``inputs`` names the config keys whose values feed the claim
    (seeds, run length, the grid keys it reads); their values at run time enter the fingerprint, so a
    result produced under another definition is reported STALE instead of being re-decided silently.
    """

    id: str
    kind: Kind
    statement: str
    reference: str
    band: Band
    inputs: tuple[str, ...] = ()
    level: float = 0.95

    def __post_init__(self):
        if self.kind not in ("reproduction", "consistency"):
            raise ValueError(f"claim {self.id}: kind must be reproduction or consistency, got {self.kind!r}")

    def definition(self, cfg: Any = None) -> dict:
        """The JSON-able definition whose hash is the fingerprint."""
        values = {k: _jsonable(getattr(cfg, k, None)) for k in self.inputs} if cfg is not None else {}
        return {"id": self.id, "kind": self.kind, "statement": self.statement, "reference": self.reference,
                "band": [_jsonable(self.band.low), _jsonable(self.band.high)], "level": self.level,
                "inputs": values}

    def fingerprint(self, cfg: Any = None) -> str:
        blob = json.dumps(self.definition(cfg), sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


def _jsonable(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    if isinstance(v, tuple):
        return [_jsonable(x) for x in v]
    return v


@dataclasses.dataclass(frozen=True)
class Decided:
    """A claim decided against its band: one row of claims.csv and verification.csv."""

    experiment: str
    claim: str
    kind: str
    reference: str
    prediction: str
    estimate: float
    ci_low: float
    ci_high: float
    n: int
    verdict: str
    mde: float
    method: str = ""
    excluded: int = 0
    seeds_needed: float = math.nan
    band_low: float = -math.inf
    band_high: float = math.inf
    statement: str = ""
    note: str = ""
    fingerprint: str = ""
    definition: str = ""

    def row(self) -> dict:
        return {k: getattr(self, k) for k in CLAIM_ROW_COLUMNS}


Measured = Estimate | tuple[Estimate, str] | None


def decide(experiment: str, spec: ClaimSpec, measured: Measured, cfg: Any = None) -> Decided:
    """Decide one claim.  ``measured`` is an Estimate, (Estimate, note), or None when the run did not
    produce the claim's inputs (a grid without the cells it compares): then INCONCLUSIVE, saying so."""
    note = ""
    if isinstance(measured, tuple):
        measured, note = measured
    common = dict(experiment=experiment, claim=spec.id, kind=spec.kind, reference=spec.reference,
                  prediction=spec.band.text(), band_low=spec.band.low, band_high=spec.band.high,
                  statement=spec.statement, fingerprint=spec.fingerprint(cfg),
                  definition=json.dumps(spec.definition(cfg), sort_keys=True))
    if measured is None:
        return Decided(**common, estimate=math.nan, ci_low=math.nan, ci_high=math.nan, n=0,
                       verdict="INCONCLUSIVE", mde=math.nan, method="absent",
                       note=note or "not measured: this run's grid or config lacks the claim's inputs")
    v = _verdict(measured, spec.band)
    need = measured.seeds_needed(spec.band) if v == "INCONCLUSIVE" else None
    if v == "INCONCLUSIVE":
        if not measured.has_interval and measured.method != "exact":
            auto = f"n = {measured.n}: too few for a {measured.method} interval, undecidable with these seeds"
        elif need is not None:
            auto = f"interval straddles the band; about {need} seeds would decide it at 80% power"
        else:
            auto = "interval straddles the band"
        note = f"{auto}. {note}" if note else auto
    return Decided(**common, estimate=measured.value, ci_low=measured.low, ci_high=measured.high,
                   n=measured.n, verdict=v, mde=measured.mde(), method=measured.method,
                   excluded=measured.excluded, seeds_needed=float(need) if need is not None else math.nan,
                   note=note)


def evaluate(experiment: str, specs: Sequence[ClaimSpec], measured: Mapping[str, Measured],
             cfg: Any = None) -> list[Decided]:
    """Decide every pre-registered claim, in the order declared.  A measured id without a spec is a
    programming error (every claim must be declared in advance)."""
    ids = [s.id for s in specs]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{experiment}: duplicate claim ids")
    unknown = set(measured) - set(ids)
    if unknown:
        raise ValueError(f"{experiment}: measured claims without a declared spec: {sorted(unknown)}")
    return [decide(experiment, s, measured.get(s.id), cfg) for s in specs]
