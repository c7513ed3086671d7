"""Claims: a paper's prediction, registered in advance, decided against a measurement with an interval.

Each experiment declares its claims once, as module-level ``CLAIMS = (ClaimSpec(...), ...)`` passed to
``Experiment(claim_specs=CLAIMS)``: statement, reference, kind (reproduction, consistency or exploratory), the band
the prediction allows, the confidence level and the config keys that feed it.  Its ``claims(tables,
cfg)`` returns an :class:`dynamics.stats.Estimate` per claim id; :func:`evaluate` decides them into
rows of claims.csv (PASS / FAIL / INCONCLUSIVE, see :func:`dynamics.stats.verdict`).  Each row keeps
the definition and its fingerprint, so ``dynamics verify`` reports a claim STALE when the code's
definition changed after the result was produced.  A band is fixed before looking and is never widened
to make a claim pass: every change after results exist is logged by ``dynamics verify --redecide``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal, get_args

from .stats import Band, Estimate
from .stats import verdict as _verdict

Kind = Literal["reproduction", "consistency", "exploratory"]
KINDS: tuple[str, ...] = get_args(Kind)
VERDICTS = ("PASS", "FAIL", "INCONCLUSIVE", "STALE")
CLAIM_COLUMNS = ["experiment", "claim", "kind", "reference", "prediction", "estimate", "ci_low", "ci_high",
                 "n", "verdict", "mde"]
CLAIM_ROW_COLUMNS = CLAIM_COLUMNS + ["method", "excluded", "seeds_needed", "band_low", "band_high", "statement",
                                     "note", "fingerprint", "definition"]


@dataclasses.dataclass(frozen=True)
class ClaimSpec:
    """A claim's pre-registered definition: what is predicted, by whom, and which inputs feed it.

    ``kind`` is ``reproduction`` (a paper's prediction tested against a measurement on which it could
    fail), ``consistency`` (the code agrees with an identity, a closed form it also computes, a second
    solver, or its own construction) or ``exploratory`` (a measurement decided against a band fixed in
    advance that the papers do not claim, e.g. our own hypothesis about real text: reported, never
    counted as evidence about a paper).  ``inputs`` names the config keys whose values feed the claim
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
        if self.kind not in KINDS:
            raise ValueError(f"claim {self.id}: kind must be one of {', '.join(KINDS)}, got {self.kind!r}")

    def definition(self, cfg: Any = None) -> dict:
        """The JSON-able definition whose hash is the fingerprint."""
        from .config import get

        # inputs are config keys in any spelling config.resolve accepts (``steps``, ``data.num_last``);
        # the definition records them as written, so moving a field into a spec keeps the fingerprint
        values = {k: _jsonable(get(cfg, k, None)) for k in self.inputs} if cfg is not None else {}
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
