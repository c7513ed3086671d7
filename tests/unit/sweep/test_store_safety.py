"""The result store never loses a result and never runs a stranger's code (issue 12, points 1 and 4).

Each test runs a one-cell, two-step Fig. 6 sweep in-process (well under a second of simulation).
"""

import errno
import hashlib
import json
import pickle
import shutil
from pathlib import Path

import pytest

TINY = ["--grid", "num_last=1", "--grid", "eta_z=1", "--grid", "ratio=1", "--seeds", "1", "--set", "steps=2",
        "--set", "batch=8", "--set", "T=8"]
EXP = "scan-snap-fig6"


def snapshot(d: Path) -> dict[str, str]:
    """Every file under ``d`` (hidden ones included) with its hash."""
    return {str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(d.rglob("*")) if p.is_file()}


@pytest.fixture
def previous(made, tmp_path):
    out = tmp_path / "res" / EXP
    shutil.copytree(made, out)
    return out


def one_line(err: str) -> bool:
    return err.count("\n") == 1 and "Traceback" not in err


def test_manifest_lists_every_file_it_wrote(previous):
    manifest = json.loads((previous / "manifest.json").read_text())
    listed = set(manifest["files"])
    on_disk = {p.name for p in previous.iterdir() if p.is_file()} - {"manifest.json"}
    assert listed == on_disk
    for name, entry in manifest["files"].items():
        assert entry["bytes"] == (previous / name).stat().st_size


def test_out_dot_in_a_checkout_deletes_nothing(cli, tmp_path, monkeypatch):
    checkout = tmp_path / "checkout"
    (checkout / "results" / EXP).mkdir(parents=True)
    (checkout / "README.md").write_text("# my project\n")
    (checkout / "pyproject.toml").write_text("[project]\n")
    (checkout / "notes.csv").write_text("a,b\n1,2\n")
    (checkout / "results" / EXP / "table.csv").write_text("x\n1\n")
    monkeypatch.chdir(checkout)
    before = snapshot(checkout)
    code, _, err = cli("sweep", EXP, *TINY, "--out", ".")
    assert code == 2 and one_line(err) and "did not write" in err
    assert snapshot(checkout) == before


def test_out_with_the_users_files_is_refused(cli, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    for name in ("notes.md", "data.csv", "plot.png", "settings.json"):
        (out / name).write_text("mine\n")
    before = snapshot(out)
    code, _, err = cli("sweep", EXP, *TINY, "--out", str(out))
    assert code == 2 and one_line(err) and "did not write (data.csv, notes.md, plot.png and 1 more)" in err
    assert snapshot(out) == before


def test_a_file_added_to_a_result_directory_is_kept_and_the_run_refused(cli, previous):
    (previous / "my_analysis.md").write_text("mine\n")
    before = snapshot(previous)
    code, _, err = cli("sweep", EXP, *TINY, "--out", str(previous))
    assert code == 2 and "my_analysis.md" in err
    assert snapshot(previous) == before


def test_rerun_replaces_only_its_own_files_and_keeps_nested_results(cli, previous, made):
    nested = previous / "ablation"
    shutil.copytree(made, nested)  # another run's --out inside this one (as results/dacdetr-gather/ia-bce)
    nested_before = snapshot(nested)
    code, _, err = cli("sweep", EXP, *TINY, "--set", "steps=3", "--out", str(previous))
    assert code == 0, err
    assert json.loads((previous / "manifest.json").read_text())["config"]["steps"] == 3
    assert snapshot(nested) == nested_before
    siblings = [p.name for p in previous.parent.iterdir() if p.name.startswith(f".{EXP}.")]
    assert siblings == [f".{EXP}.lock"], siblings  # no staging or backup left behind


def test_resume_into_another_experiments_directory_is_refused(cli, previous):
    before = snapshot(previous)
    code, _, err = cli("run", "scan-snap-fig4", "--quick", "--resume", "--out", str(previous))
    assert code == 2 and one_line(err) and "holds results of 'scan-snap-fig6', not 'scan-snap-fig4'" in err
    assert snapshot(previous) == before


def test_resume_with_another_config_is_refused(cli, previous):
    before = snapshot(previous)
    code, _, err = cli("sweep", EXP, *TINY, "--set", "batch=16", "--resume", "--out", str(previous))
    assert code == 2 and "--resume" in err and "different config (batch)" in err
    assert snapshot(previous) == before


def test_disk_full_while_writing_leaves_the_previous_result_intact(cli, previous, monkeypatch):
    from dynamics.sweep import store

    before = snapshot(previous)
    real = store.atomic_write_bytes
    calls = []

    def full_disk(path, data):
        calls.append(path)
        if len(calls) == 2:  # the first table is written; the second finds the disk full
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, data)

    monkeypatch.setattr(store, "atomic_write_bytes", full_disk)
    code, _, err = cli("sweep", EXP, *TINY, "--set", "steps=3", "--out", str(previous))
    assert code == 2 and one_line(err) and "No space left on device" in err
    after = snapshot(previous)
    # the result files are the old ones, byte for byte; only the checkpoints of this run were added
    assert {k: v for k, v in after.items() if not k.startswith(".cells")} == \
           {k: v for k, v in before.items() if not k.startswith(".cells")}
    assert not [p for p in previous.parent.iterdir() if ".new-" in p.name or ".old-" in p.name]


def test_disk_full_while_writing_the_manifest_leaves_the_previous_result_intact(cli, previous, monkeypatch):
    from dynamics.sweep import store

    before = snapshot(previous)
    real = store.atomic_write_bytes

    def full_disk(path, data):
        if Path(path).name == "manifest.json":
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, data)

    monkeypatch.setattr(store, "atomic_write_bytes", full_disk)
    code, _, err = cli("sweep", EXP, *TINY, "--set", "steps=3", "--out", str(previous))
    assert code == 2 and "No space left on device" in err
    assert {k: v for k, v in snapshot(previous).items() if not k.startswith(".cells")} == \
           {k: v for k, v in before.items() if not k.startswith(".cells")}


def test_a_swap_interrupted_half_way_is_undone_by_the_next_run(previous):
    """A crash between 'old -> backup' and 'new -> final' leaves no directory in place: the next run
    brings the old result back before doing anything else."""
    from dynamics.sweep.store import Store

    before = snapshot(previous)
    backup = previous.parent / f".{EXP}.old-x1"
    backup.mkdir()
    previous.rename(backup / "d")
    staging = previous.parent / f".{EXP}.new-x2"
    staging.mkdir()
    (staging / "table.csv").write_text("half\n")
    Store(previous).recover()
    assert snapshot(previous) == before
    assert not backup.exists() and not staging.exists()


def test_quick_run_writes_under_runs_not_results(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("DYNAMICS_RESULTS", str(tmp_path / "results"))
    committed = tmp_path / "results" / EXP
    committed.mkdir(parents=True)
    (committed / "table.csv").write_text("committed\n")
    before = snapshot(tmp_path / "results")
    code, out, err = cli("run", EXP, "--quick", "--set", "num_last=1", "--set", "eta_z=1", "--set", "ratio=1",
                         "--set", "steps=2", "--set", "batch=8", "--set", "T=8", "--seeds", "1")
    assert code == 0, err
    assert snapshot(tmp_path / "results") == before
    assert (tmp_path / "runs" / EXP / "table.csv").exists() and f"runs/{EXP}" in out


def test_legacy_manifest_without_a_file_list_is_reused(cli, previous):
    """Result directories written before the file list existed (the committed results/) stay usable."""
    manifest = json.loads((previous / "manifest.json").read_text())
    del manifest["files"], manifest["store_format"]
    (previous / "manifest.json").write_text(json.dumps(manifest))
    code, _, err = cli("sweep", EXP, *TINY, "--out", str(previous))
    assert code == 0, err
    assert "files" in json.loads((previous / "manifest.json").read_text())


class Payload:
    """Unpickling this creates ``target``: the store must never get that far."""

    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (Path.touch, (self.target,))


def test_a_crafted_pickle_checkpoint_is_never_loaded(cli, previous, tmp_path):
    target = tmp_path / "pwned"
    payload = pickle.dumps(Payload(target))
    manifest = json.loads((previous / "manifest.json").read_text())
    for cid in ("0123456789abcdef",):
        (previous / ".cells" / f"{cid}.pkl").write_bytes(payload)
    code, _, err = cli("sweep", EXP, *TINY, "--out", str(previous), "--resume")
    assert code == 0, err
    assert not target.exists()
    assert manifest["experiment"] == EXP


@pytest.mark.parametrize("damage", ["truncate", "garbage", "index"])
def test_a_corrupt_checkpoint_on_resume_is_one_line_naming_the_file(cli, previous, damage):
    cell = next(p for p in (previous / ".cells").iterdir() if p.is_dir())
    if damage == "index":
        (cell / "index.json").write_text("{not json")
    else:
        part = next(cell.glob("*.parquet"))
        data = part.read_bytes()
        part.write_bytes(data[: len(data) // 2] if damage == "truncate" else b"\0garbage" * 10)
    before = {k: v for k, v in snapshot(previous).items() if not k.startswith(".cells")}
    code, _, err = cli("sweep", EXP, *TINY, "--out", str(previous), "--resume")
    assert code == 2 and one_line(err) and str(cell) in err
    assert {k: v for k, v in snapshot(previous).items() if not k.startswith(".cells")} == before


def test_no_pickle_or_torch_load_of_files():
    root = Path(__file__).resolve().parents[3]
    hits = []
    for base in ("dynamics", "experiments"):
        for path in (root / base).rglob("*.py"):
            for i, line in enumerate(path.read_text().splitlines(), 1):
                if ("pickle.load" in line or "torch.load" in line) and "weights_only=True" not in line:
                    hits.append(f"{path.relative_to(root)}:{i}: {line.strip()}")
    assert not hits, hits


def test_plot_redraws_into_the_result_and_keeps_the_manifest_checks(cli, previous):
    (previous / "fig6_entropy.png").unlink()
    code, out, err = cli("plot", EXP, "--dir", str(previous))
    assert code == 0, err
    assert "fig6_entropy.png" in out
    assert cli("table", EXP, "--dir", str(previous))[0] == 0
    manifest = json.loads((previous / "manifest.json").read_text())
    assert manifest["files"]["fig6_entropy.png"]["bytes"] == (previous / "fig6_entropy.png").stat().st_size


def test_plot_never_replaces_a_figure_it_did_not_write(cli, previous):
    manifest = json.loads((previous / "manifest.json").read_text())
    del manifest["files"]["fig6_entropy.png"]  # as if the user had put their own figure there
    (previous / "manifest.json").write_text(json.dumps(manifest))
    (previous / "fig6_entropy.png").write_bytes(b"mine")
    code, _, err = cli("plot", EXP, "--dir", str(previous))
    assert code == 2 and "was not written by this program" in err
    assert (previous / "fig6_entropy.png").read_bytes() == b"mine"


def test_a_nested_run_and_its_lock_survive_a_rerun_of_the_outer_result(cli, previous):
    """As `make ablations` writes results/dacdetr-gather/ia-bce inside results/dacdetr-gather."""
    nested = previous / "ablation"
    assert cli("sweep", EXP, *TINY, "--set", "steps=3", "--out", str(nested))[0] == 0
    assert (previous / ".ablation.lock").exists()
    nested_before = snapshot(nested)
    code, _, err = cli("sweep", EXP, *TINY, "--out", str(previous))
    assert code == 0, err
    assert snapshot(nested) == nested_before and "warning" not in err
    assert not [p for p in previous.parent.iterdir() if ".old-" in p.name or ".new-" in p.name]


def test_a_symlinked_out_is_refused(cli, previous, tmp_path):
    link = tmp_path / "link"
    link.symlink_to(previous)
    before = snapshot(previous)
    code, _, err = cli("sweep", EXP, *TINY, "--out", str(link))
    assert code == 2 and "symbolic link" in err
    assert snapshot(previous) == before
