"""``dynamics verify`` on a tiny experiment: STALE on an edited definition, cleared by a rerun or a logged
re-decision; merging keeps other experiments' rows; exit codes 0 / 1 / 2; nothing runs unless asked."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from dynamics import experiments
from dynamics import stats as S
from dynamics.claims import ClaimSpec
from dynamics.config import field
from dynamics.errors import UserError
from dynamics.experiment import Experiment
from dynamics.stats import Band
from dynamics.sweep import runner
from dynamics.verify import verify


@dataclasses.dataclass(frozen=True)
class TinyConfig:
    seeds: int = field(6, "seeds")
    shift: float = field(1.0, "mean of the per-seed values")
    seed: int = field(0, "root seed")


def _run_batch(cfgs, ctx):
    out = []
    for cfg in cfgs:
        rng = np.random.default_rng(np.random.SeedSequence(cfg.seed))
        out.append({"runs": pd.DataFrame({"seed": np.arange(cfg.seeds),
                                          "value": cfg.shift + 0.1 * rng.standard_normal(cfg.seeds)})})
    return out


def _summarize(tables, base):
    return {"table": tables["runs"].agg(["mean", "std"]).reset_index(), "runs": tables["runs"]}


def _claims(tables, cfg):
    return {"value-positive": S.t_interval(tables["runs"].value), "always-one": S.exact(1.0)}


SPECS = (ClaimSpec("value-positive", "reproduction", "the per-seed value is positive", "test", Band.above(0.0),
                   ("seeds", "shift")),
         ClaimSpec("always-one", "consistency", "an identity", "test", Band.between(1.0, 1.0)))
TINY = Experiment(name="tiny", summary="tiny", reference="test", config=TinyConfig, run_batch=_run_batch,
                  summarize=_summarize, claims=_claims, claim_specs=SPECS)


def _with_band(exp: Experiment, band: Band) -> Experiment:
    specs = (dataclasses.replace(exp.claim_specs[0], band=band),) + exp.claim_specs[1:]
    return dataclasses.replace(exp, claim_specs=specs)


def _run(exp: Experiment, root, **over):
    runner.execute(runner.plan(exp, over), root / exp.name, argv=["test"])


def test_editing_a_band_turns_the_claim_stale_and_a_rerun_clears_it(tmp_path):
    _run(TINY, tmp_path)
    out = verify({"tiny": TINY}, tmp_path)
    assert out.verified == ["tiny"] and not out.failed
    assert dict(zip(out.table.claim, out.table.verdict)) == {"value-positive": "PASS", "always-one": "PASS"}
    edited = _with_band(TINY, Band.above(0.1))
    out = verify({"tiny": edited}, tmp_path)
    row = out.table.set_index("claim").loc["value-positive"]
    assert row.verdict == "STALE" and "band [0.0, inf] -> [0.1, inf]" in row.note
    assert out.table.set_index("claim").loc["always-one"].verdict == "PASS"  # untouched definition stays
    assert out.failed  # a STALE reproduction fails verify
    _run(edited, tmp_path)
    out = verify({"tiny": edited}, tmp_path)
    assert set(out.table.verdict) == {"PASS"} and not out.failed


def test_a_changed_input_is_named_and_new_or_removed_claims_are_stale(tmp_path):
    _run(TINY, tmp_path, shift="2.0")
    changed = dataclasses.replace(TINY, claim_specs=(
        dataclasses.replace(SPECS[0], inputs=("seeds",)),
        ClaimSpec("brand-new", "reproduction", "new", "test", Band.above(0.0))))
    t = verify({"tiny": changed}, tmp_path).table.set_index("claim")
    assert "shift 2.0 -> absent" in t.loc["value-positive"].note
    assert t.loc["brand-new"].verdict == "STALE" and "new claim" in t.loc["brand-new"].note
    assert t.loc["always-one"].verdict == "STALE" and "removed" in t.loc["always-one"].note


def test_redecide_rewrites_claims_and_logs_the_change(tmp_path):
    _run(TINY, tmp_path)
    edited = _with_band(TINY, Band.above(5.0))
    out = verify({"tiny": edited}, tmp_path, ["tiny"], redecide_reason="tighter band, pre-registered")
    assert out.table.set_index("claim").loc["value-positive"].verdict == "FAIL" and out.failed
    log = pd.read_csv(tmp_path / "claims-changes.csv")
    assert list(log.claim) == ["value-positive"] and log.reason.iloc[0] == "tighter band, pre-registered"
    assert '"band": [0.0, "inf"]' in log.old_definition.iloc[0] and '"band": [5.0, "inf"]' in log.new_definition.iloc[0]
    assert (log.old_verdict.iloc[0], log.new_verdict.iloc[0]) == ("PASS", "FAIL")
    assert "STALE" not in set(verify({"tiny": edited}, tmp_path).table.verdict)


def test_verify_one_experiment_keeps_the_other_rows(tmp_path):
    _run(TINY, tmp_path)
    other = pd.DataFrame({"experiment": ["other"] * 3, "claim": ["a", "b", "c"], "kind": "reproduction",
                          "verdict": "PASS"})
    other.to_csv(tmp_path / "verification.csv", index=False)
    table = verify({"tiny": TINY}, tmp_path, ["tiny"]).table
    assert list(table[table.experiment == "other"].claim) == ["a", "b", "c"]
    assert (table.experiment == "tiny").sum() == 2
    again = verify({"tiny": TINY}, tmp_path, ["tiny"]).table
    assert len(again) == 5  # replaced, not appended
    for name in ("VERIFICATION.md", "verification-summary.md", "coverage.md"):
        assert (tmp_path / name).exists()


def test_an_experiment_without_results_is_skipped_not_run(tmp_path):
    out = verify({"tiny": TINY}, tmp_path, ["tiny"])
    assert "tiny" in out.skipped and not (tmp_path / "tiny").exists() and out.verified == []
    ran = []
    verify({"tiny": TINY}, tmp_path, ["tiny"], run=lambda n: (ran.append(n), _run(TINY, tmp_path)))
    assert ran == ["tiny"]


def test_unknown_experiment_is_a_user_error(tmp_path):
    with pytest.raises(UserError):
        verify({"tiny": TINY}, tmp_path, ["nope"])


@pytest.fixture
def tiny_registry(monkeypatch):
    registry = {"tiny": TINY}

    def get(name):
        if name not in registry:
            raise UserError(f"unknown experiment {name!r}")
        return registry[name]

    monkeypatch.setattr(experiments, "names", lambda: list(registry))
    monkeypatch.setattr(experiments, "get", get)
    return registry


def test_exit_codes(cli, tmp_path, tiny_registry):
    _run(TINY, tmp_path)
    code, text, _ = cli("verify", "--results", str(tmp_path))
    assert code == 0 and "reproductions: 1 PASS" in text and "consistency: 1 PASS" in text
    tiny_registry["tiny"] = _with_band(TINY, Band.above(5.0))
    code, text, _ = cli("verify", "--results", str(tmp_path))
    assert code == 1 and "1 STALE" in text  # edited definition, not rerun
    code, _, err = cli("verify", "tiny", "--redecide", "--results", str(tmp_path))
    assert code == 2 and "--reason" in err
    code, _, _ = cli("verify", "tiny", "--redecide", "--reason", "test", "--results", str(tmp_path))
    assert code == 1  # now decided: FAIL
    code, _, err = cli("verify", "nope", "--results", str(tmp_path))
    assert code == 2 and "unknown experiment" in err
    code, _, err = cli("verify", "--reason", "x", "--results", str(tmp_path))
    assert code == 2


def test_cli_skips_missing_results_unless_run_is_asked(cli, tmp_path, tiny_registry):
    code, text, _ = cli("verify", "--results", str(tmp_path))
    assert code == 0 and "skipped: no saved results" in text and not (tmp_path / "tiny").exists()
    code, text, _ = cli("verify", "tiny", "--run", "--results", str(tmp_path))
    assert code == 0 and (tmp_path / "tiny" / "claims.csv").exists() and "reproductions: 1 PASS" in text


def test_an_exploratory_claim_is_decided_listed_apart_and_never_fails_verify(tmp_path):
    """An exploratory measurement (a band the papers do not claim) is decided and written in its own
    section of VERIFICATION.md, and a FAIL of it does not make verify fail."""
    specs = (SPECS[0], dataclasses.replace(SPECS[1], id="always-one", kind="exploratory",
                                           band=Band.between(2.0, 2.0)))
    exp = dataclasses.replace(TINY, claim_specs=specs)
    _run(exp, tmp_path)
    out = verify({"tiny": exp}, tmp_path, ["tiny"])
    assert out.table.set_index("claim").loc["always-one", "verdict"] == "FAIL" and not out.failed
    assert out.counts("tiny")["exploratory"]["FAIL"] == 1
    assert "## Exploratory measurements" in (tmp_path / "VERIFICATION.md").read_text()
    with pytest.raises(ValueError):
        ClaimSpec("x", "speculative", "s", "r", Band.above(0))
