"""``dynamics verify``: collect every experiment's decided claims from its saved results.

Verify reads; it does not simulate.  For each experiment it reads ``<root>/<exp>/claims.csv`` and the
manifest's config, and compares each saved row's fingerprint with the fingerprint of the claim's
current definition (:class:`dynamics.claims.ClaimSpec`) under that config.  A row whose definition
changed since its result was produced, a claim added since, or one removed since, is STALE, with a
note naming what changed (``band [0, inf] -> [0.1, inf]``); rerunning the experiment clears it.  An
experiment without saved results is reported in one line and skipped.  It runs only when asked
(``run=True``).

``redecide`` re-evaluates the current definitions on the saved tables (no simulation), rewrites that
result's claims.csv, and appends one row per changed definition to ``<root>/claims-changes.csv``: the
pre-registration log (old definition, new definition, date, reason).

The verification table merges: verifying some experiments replaces only their rows.  From the merged
table it writes ``verification.csv``, ``VERIFICATION.md`` (reproductions and consistency checks in
separate sections, then the coverage map), ``verification-summary.md`` (reproductions only, for the
README) and ``coverage.md``.

The experiments are passed in (name -> Experiment) so this module does not import ``experiments``.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from . import coverage as _coverage
from .claims import CLAIM_COLUMNS, CLAIM_ROW_COLUMNS, KINDS, evaluate
from .config import build
from .errors import UserError
from .experiment import Experiment
from .sweep.store import Store, atomic_write_text, to_markdown

TABLE_COLUMNS = CLAIM_COLUMNS + ["method", "excluded", "seeds_needed", "band_low", "band_high", "statement",
                                 "note", "fingerprint"]
CHANGE_COLUMNS = ["experiment", "claim", "old_definition", "new_definition", "old_verdict", "new_verdict",
                  "date", "reason"]
VERDICT_ORDER = ("PASS", "FAIL", "INCONCLUSIVE", "STALE")


@dataclasses.dataclass
class Outcome:
    """What one verify call found: the merged table and, per experiment asked for, a line."""

    table: pd.DataFrame  # every experiment's rows, merged with what was on disk
    verified: list[str]  # experiments whose rows were refreshed in this call
    skipped: dict[str, str]  # experiment -> why (no saved results)

    def counts(self, name: str) -> dict[str, dict[str, int]]:
        rows = self.table[self.table.experiment == name]
        return {kind: {v: int(((rows.kind == kind) & (rows.verdict == v)).sum()) for v in VERDICT_ORDER}
                for kind in KINDS}

    @property
    def failed(self) -> bool:
        """A reproduction of a verified experiment FAILs or is STALE."""
        rows = self.table[self.table.experiment.isin(self.verified) & (self.table.kind == "reproduction")]
        return bool(rows.verdict.isin(["FAIL", "STALE"]).any())


def _saved_config(exp: Experiment, store: Store) -> tuple[Any, str]:
    """The config the saved result was produced under (or None, and why, when it no longer builds)."""
    try:
        return build(exp.config, store.read_json("manifest.json")["config"]), ""
    except (UserError, KeyError, TypeError, ValueError) as exc:
        return None, f"the saved config no longer builds ({exc})"


def _read_claims(path: Path) -> pd.DataFrame:
    try:
        return pd.read_csv(path, keep_default_na=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: not a readable claims table ({exc})") from None


def _legacy_definition(row: pd.Series) -> str:
    """The saved definition of a claim decided by the pre-issue-13 helpers (close/at_least/within)."""
    return json.dumps({"legacy": True, "predicted": _num(row.get("predicted")),
                       "tolerance": _num(row.get("tolerance")), "status": row.get("status")}, sort_keys=True)


def _num(v):
    try:
        v = float(v)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else str(v)


def definition_diff(old: str, new: str) -> str:
    """What changed between two saved definitions, in words: ``band [0, inf] -> [0.1, inf]``."""
    try:
        a, b = json.loads(old), json.loads(new)
    except (TypeError, ValueError):
        return "definition unreadable"
    if a.get("legacy"):
        return (f"decided by the legacy helpers (predicted {a.get('predicted')}, tolerance {a.get('tolerance')}, "
                f"{a.get('status')}); now kind {b.get('kind')}, band {_band(b.get('band'))}")
    parts = []
    for key in ("kind", "band", "level", "statement", "reference"):
        if a.get(key) != b.get(key):
            if key == "band":
                parts.append(f"band {_band(a.get(key))} -> {_band(b.get(key))}")
            elif key in ("statement", "reference"):
                parts.append(f"{key} reworded")
            else:
                parts.append(f"{key} {a.get(key)} -> {b.get(key)}")
    ia, ib = a.get("inputs", {}), b.get("inputs", {})
    for key in sorted(set(ia) | set(ib)):
        if ia.get(key, "absent") != ib.get(key, "absent"):
            parts.append(f"{key} {ia.get(key, 'absent')} -> {ib.get(key, 'absent')}")
    return "; ".join(parts) or "definition changed"


def _band(b) -> str:
    if not b:
        return "?"
    return "[" + ", ".join(str(x) for x in b) + "]"


def _stale_row(name: str, spec, cfg, note: str, saved: pd.Series | None = None) -> dict:
    row = {c: math.nan for c in TABLE_COLUMNS}
    if saved is not None:
        row.update({c: saved.get(c, math.nan) for c in TABLE_COLUMNS if c in saved.index})
    row.update(experiment=name, verdict="STALE", note=note)
    if spec is not None:
        row.update(claim=spec.id, kind=spec.kind, reference=spec.reference, prediction=spec.band.text(),
                   band_low=spec.band.low, band_high=spec.band.high, statement=spec.statement,
                   fingerprint=spec.fingerprint(cfg) if cfg is not None else "")
    return row


def check(name: str, exp: Experiment, root: Path) -> list[dict]:
    """The experiment's saved claims, each kept or marked STALE against the current definitions."""
    store = Store(root / name)
    saved = _read_claims(store.root / "claims.csv")
    cfg, why = _saved_config(exp, store)
    legacy = "fingerprint" not in saved.columns
    by_id = {r.claim: r for _, r in saved.iterrows()}
    rows = []
    for spec in exp.claim_specs:
        old = by_id.pop(spec.id, None)
        if cfg is None:
            rows.append(_stale_row(name, spec, None, why, old))
        elif old is None:
            rows.append(_stale_row(name, spec, cfg, "new claim: not in the saved results"))
        elif legacy:
            rows.append(_stale_row(name, spec, cfg, "saved by the legacy claim helpers: "
                                   + definition_diff(_legacy_definition(old), json.dumps(spec.definition(cfg)))))
        elif old["fingerprint"] != spec.fingerprint(cfg):
            rows.append(_stale_row(name, spec, cfg, "definition changed since the run: "
                                   + definition_diff(old["definition"], json.dumps(spec.definition(cfg))), old))
        else:
            rows.append({c: old.get(c, math.nan) for c in TABLE_COLUMNS})
    for claim, old in by_id.items():
        row = {c: old.get(c, math.nan) for c in TABLE_COLUMNS if c in old.index}
        rows.append({c: math.nan for c in TABLE_COLUMNS} | row | {
            "experiment": name, "claim": claim, "verdict": "STALE",
            "kind": old.get("kind", "reproduction") if isinstance(old.get("kind"), str) else "reproduction",
            "note": "claim removed from the code since the run"})
    return rows


def redecide(name: str, exp: Experiment, root: Path, reason: str, today: str | None = None,
             directory: Path | None = None) -> list[dict]:
    """Decide the current definitions on the saved tables, rewrite claims.csv, log changed definitions.

    ``directory`` (default ``root / name``) may hold another run of the same experiment (an ablation
    written with --out); the log then names that directory.  Returns the change-log rows appended to
    ``<root>/claims-changes.csv``."""
    store = Store(directory or root / name)
    try:
        label = store.root.relative_to(root).as_posix()  # "dacdetr-gather/ia-bce" for a nested ablation
    except ValueError:
        label = store.root.name
    cfg, why = _saved_config(exp, store)
    if cfg is None:
        raise UserError(f"{label}: cannot re-decide, {why}")
    path = store.root / "claims.csv"
    saved = _read_claims(path) if path.exists() else pd.DataFrame(columns=["claim"])
    decided = evaluate(label, exp.claim_specs, exp.claims(store.load_tables(), cfg), cfg)
    table = pd.DataFrame([d.row() for d in decided], columns=CLAIM_ROW_COLUMNS)
    today = today or _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d")
    legacy = "fingerprint" not in saved.columns
    by_id = {r.claim: r for _, r in saved.iterrows()}
    changes = []
    for d in decided:
        old = by_id.pop(d.claim, None)
        old_def = "" if old is None else (_legacy_definition(old) if legacy else old["definition"])
        old_verdict = "" if old is None else str(old["status"] if legacy else old["verdict"])
        if old_def != d.definition:
            changes.append({"experiment": label, "claim": d.claim, "old_definition": old_def or "(new claim)",
                            "new_definition": d.definition, "old_verdict": old_verdict, "new_verdict": d.verdict,
                            "date": today, "reason": reason})
    for claim, old in by_id.items():
        changes.append({"experiment": label, "claim": claim,
                        "old_definition": _legacy_definition(old) if legacy else old["definition"],
                        "new_definition": "(removed)", "old_verdict": str(old["status"] if legacy else old["verdict"]),
                        "new_verdict": "", "date": today, "reason": reason})
    lock = store.lock()
    try:  # through the store, so the manifest's record of claims.csv (size, hash) stays true
        store.rewrite("claims.csv", table.to_csv(index=False, float_format="%.10g").encode())
    finally:
        lock.release()
    if changes:
        log = root / "claims-changes.csv"
        prior = pd.read_csv(log) if log.exists() else pd.DataFrame(columns=CHANGE_COLUMNS)
        both = pd.concat([prior, pd.DataFrame(changes, columns=CHANGE_COLUMNS)], ignore_index=True)
        atomic_write_text(log, both.to_csv(index=False))
    return changes


def verify(experiments: Mapping[str, Experiment], root: Path, names: Sequence[str] = (), *,
           run: Callable[[str], None] | None = None, redecide_reason: str | None = None) -> Outcome:
    """Verify ``names`` (default: every experiment with claims) from the saved results under ``root``.

    ``run(name)``, when given, is called for an experiment without saved results (the caller decides
    what a run is); otherwise such an experiment is skipped.  ``redecide_reason`` re-decides each named
    experiment's claims on its saved tables first (see :func:`redecide`).
    """
    unknown = [n for n in names if n not in experiments]
    if unknown:
        raise UserError(f"unknown experiment {unknown[0]!r}; see `dynamics list`")
    names = list(names) or [n for n, e in experiments.items() if e.claims]
    fresh, skipped = [], {}
    for name in names:
        exp = experiments[name]
        if not exp.claims:
            skipped[name] = "declares no claims"
            continue
        have = (root / name / "manifest.json").exists() and (root / name / "claims.csv").exists()
        if not have and run is not None:
            run(name)
            have = True
        if not have:
            skipped[name] = f"no saved results in {root / name} (run `dynamics run {name}` or `dynamics verify --run {name}`)"
            continue
        if redecide_reason is not None:
            redecide(name, exp, root, redecide_reason)
        fresh.append(pd.DataFrame(check(name, exp, root), columns=TABLE_COLUMNS))
    verified = [n for n in names if n not in skipped]
    table = merge(read_table(root), fresh, verified, list(experiments))
    write(table, root)
    return Outcome(table, verified, skipped)


def read_table(root: Path) -> pd.DataFrame:
    """The verification table on disk; rows in the legacy format are kept as STALE."""
    path = root / "verification.csv"
    if not path.exists():
        return pd.DataFrame(columns=TABLE_COLUMNS)
    old = _read_claims(path)
    if "verdict" not in old.columns:  # written before issue 13: nothing in it was decided with intervals
        old = old.assign(kind="reproduction", verdict="STALE", prediction="", estimate=old.get("measured"),
                         note="verified under the legacy format; run `dynamics verify` for this experiment")
    return old.reindex(columns=TABLE_COLUMNS)


def merge(old: pd.DataFrame, fresh: list[pd.DataFrame], replaced: Sequence[str], order: Sequence[str]) -> pd.DataFrame:
    """``old`` without the rows of ``replaced``, plus ``fresh``; experiments in registry order."""
    kept = old[~old.experiment.isin(replaced)]
    parts = [p for p in [kept, *fresh] if len(p)]
    table = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=TABLE_COLUMNS)
    rank = {n: i for i, n in enumerate(order)}
    table["_order"] = table.experiment.map(lambda n: rank.get(n, len(rank)))
    table = table.sort_values("_order", kind="stable").drop(columns="_order").reset_index(drop=True)
    return table[TABLE_COLUMNS]


# -- writing -------------------------------------------------------------------------------------

def _fmt(x) -> str:
    try:
        x = float(x)
    except (TypeError, ValueError):
        return ""
    return "" if math.isnan(x) else f"{x:.4g}"


def _claims_table(rows: pd.DataFrame) -> str:
    show = pd.DataFrame({
        "experiment": rows.experiment, "claim": rows.claim, "prediction": rows.prediction,
        "estimate": rows.estimate.map(_fmt),
        "95% CI": [f"[{_fmt(a)}, {_fmt(b)}]" if _fmt(a) else "" for a, b in zip(rows.ci_low, rows.ci_high)],
        "n": rows.n.map(lambda v: "" if pd.isna(v) else str(int(v))), "method": rows.method.fillna(""),
        "verdict": rows.verdict, "MDE": rows.mde.map(_fmt)})
    return to_markdown(show)


def counts_table(table: pd.DataFrame, kind: str) -> pd.DataFrame:
    rows = table[table.kind == kind]
    out = rows.groupby("experiment", sort=False).verdict.agg(
        claims="count", **{v: (lambda s, v=v: int((s == v).sum())) for v in VERDICT_ORDER}).reset_index()
    return out


def _exploratory_section(table: pd.DataFrame) -> list[str]:
    exp = table[table.kind == "exploratory"]
    if not len(exp):
        return []
    return ["## Exploratory measurements (decided against a band fixed in advance; not claims of the papers)", "",
            to_markdown(counts_table(table, "exploratory")), _claims_table(exp)]


def write(table: pd.DataFrame, root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    atomic_write_text(root / "verification.csv", table.to_csv(index=False, float_format="%.10g"))
    rep, con = table[table.kind == "reproduction"], table[table.kind == "consistency"]
    cov = _coverage.coverage(table)
    tally = {v: int((rep.verdict == v).sum()) for v in VERDICT_ORDER}
    head = (f"{len(rep)} reproductions: {tally['PASS']} PASS, {tally['FAIL']} FAIL, "
            f"{tally['INCONCLUSIVE']} INCONCLUSIVE, {tally['STALE']} STALE.")
    lines = [
        "# Verification", "",
        "Generated by `dynamics verify` from the saved results (nothing is simulated). " + head,
        (f"Besides them, {len(con)} consistency checks ({int((con.verdict == 'PASS').sum())} PASS) test the code "
         "against identities, closed forms it also computes, second solvers or its own construction; they are "
         "not evidence about the papers and are not counted above."), "",
        ("Verdicts: each claim's prediction is a band fixed in advance (`results/claims-changes.csv` logs every "
         "change of a definition after its results existed). The measurement is an estimate with a 95% interval "
         "over independent seeds (t, paired t, Wilson for rates, seeded bootstrap for fits; `exact` for "
         "deterministic quantities). PASS: the interval lies inside the band; FAIL: wholly outside; "
         "INCONCLUSIVE: it straddles an edge, or there is no interval (too few seeds). STALE: the claim's "
         "definition changed since its result was produced; rerun the experiment. MDE is the minimum detectable "
         "effect at this n (80% power); the notes say how many seeds would decide an INCONCLUSIVE claim."), "",
        "## Reproductions", "", to_markdown(counts_table(table, "reproduction")), _claims_table(rep),
        "## Consistency checks (tests of the code, not of the papers)", "",
        to_markdown(counts_table(table, "consistency")), _claims_table(con),
        *_exploratory_section(table),
        "## Coverage of the papers", "", _coverage.render(cov),
        "## Claims in words", "",
    ]
    for row in table.itertuples(index=False):
        note = row.note if isinstance(row.note, str) and row.note else ""
        lines.append(f"- **{row.experiment} / {row.claim}** ({row.kind}, {row.verdict}): {row.statement}"
                     + (f" — {note}" if note else ""))
    atomic_write_text(root / "VERIFICATION.md", "\n".join(lines) + "\n")
    summary = counts_table(table, "reproduction")
    text = to_markdown(summary) + f"\n{head} Consistency checks ({len(con)}) are listed separately in VERIFICATION.md.\n"
    failed = rep[rep.verdict == "FAIL"]
    if len(failed):
        text += "Contradicted (FAIL): " + ", ".join(f"`{r.experiment}/{r.claim}`" for r in failed.itertuples()) + "\n"
    text += "\n" + _coverage.summary(cov) + "\n"
    atomic_write_text(root / "verification-summary.md", text)
    atomic_write_text(root / "coverage.md", "# Coverage of the papers\n\n" + _coverage.render(cov))
