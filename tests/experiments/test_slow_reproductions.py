"""Paper-scale checks (`make test-all`): full default runs of the cheaper experiments reproduce the
committed tables and claims byte for byte (same seeds, same code), so results/ is what the code makes."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXPERIMENTS = ["scan-snap-fig4", "scan-snap-fig6", "scan-snap-closed-forms", "scan-snap-phase", "rank-collapse",
               "joma-fig4", "depth-width-theory"]


@pytest.mark.slow
@pytest.mark.parametrize("name", EXPERIMENTS)
def test_full_run_reproduces_the_committed_tables(name, cli, tmp_path):
    code, _, err = cli("run", name, "--dir", str(tmp_path / name))
    assert code == 0, err
    committed = ROOT / "results" / name
    for table in sorted(p.name for p in committed.glob("*.csv")):
        assert (tmp_path / name / table).read_bytes() == (committed / table).read_bytes(), table
