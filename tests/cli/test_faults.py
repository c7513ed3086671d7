"""The fault suite of issue 12: every fault is one line, with exit 2 for bad input and 3 for a bug,
and nothing is written or lost.  Plus property tests of config parsing (hypothesis).

Data-loss and checkpoint faults are in test_store_safety.py.
"""

import json
import math
import os
import shutil
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

EXP = "scan-snap-fig6"
TINY = ["--grid", "num_last=1", "--grid", "eta_z=1", "--grid", "ratio=1", "--seeds", "1", "--set", "steps=2",
        "--set", "batch=8", "--set", "T=8"]


def one_line(err: str) -> bool:
    return err.count("\n") == 1 and "Traceback" not in err


# (arguments, message); every one exits 2 before anything is written
BAD_INPUT = [
    # numbers that do not fit, are not finite, or are out of range
    (["run", EXP, "--set", "steps=99999999999999999999999"], "steps=99999999999999999999999: out of range"),
    (["run", EXP, "--set", "steps=1e400"], "steps='1e400': expected int"),
    (["run", EXP, "--set", "steps=2.5"], "steps='2.5': expected int"),
    (["run", EXP, "--seeds", "99999999999999999999999"], "seeds=99999999999999999999999: out of range"),
    (["run", EXP, "--set", "seed=-1"], "seed must be a non-negative integer, got -1"),
    (["run", EXP, "--set", "common_unnormalized_prob=inf"], "common_unnormalized_prob=inf: must be a finite number"),
    (["run", EXP, "--set", "eta_z=nan"], "eta_z=nan: must be a finite number"),
    (["run", EXP, "--set", "eta_z=inf"], "eta_z=inf: must be a finite number"),
    (["sweep", EXP, "--grid", "eta_z=1,-inf"], "eta_z=-inf: must be a finite number"),
    (["run", "dacdetr-gather", "--set", "tau=inf"], "tau=inf: must be a finite number"),
    # the device, up front
    (["run", EXP, "--set", "device=tpu"], "unknown device 'tpu'"),
    # runs too large to start: refused with the estimate, before anything is allocated
    (["run", EXP, "--set", "steps=1e12"], "estimated at 1e+10 x the work of its default run (steps=1000000000000"),
    (["run", EXP, "--seeds", "1000000000"], "estimated at 1e+08 x the work of its default run (seeds=1000000000"),
    (["sweep", EXP, "--grid", "seed=" + ",".join(map(str, range(1000))), "--grid",
      "eta_z=" + ",".join(map(str, range(1, 1001)))], "the grid has 16,000,000 cells"),
    (["run", "deepvit-collapse", "--set", "max_steps=1e9"], "deepvit-collapse: estimated at"),
    (["run", EXP, "--max-cells", "0"], "--max-cells must be at least 1, got 0"),
    # malformed Dask addresses and settings
    (["run", EXP, "--executor", "dask", "--address", "tcp://nohost"], "expected tcp://HOST:PORT or tls://HOST:PORT"),
    (["run", EXP, "--executor", "dask", "--address", "http://x:1"], "expected tcp://HOST:PORT or tls://HOST:PORT"),
    (["run", EXP, "--executor", "dask", "--address", "tcp://127.0.0.1:99999"], "expected tcp://HOST:PORT"),
    (["run", EXP, "--executor", "dask", "--address", "tls://127.0.0.1:8786"], "is TLS: pass --dask-tls"),
    (["run", EXP, "--executor", "dask", "--address", "tls://127.0.0.1:8786", "--dask-tls", "ca.pem", "c.pem", "k.pem"],
     "--dask-tls: CA certificate ca.pem does not exist"),
    (["run", EXP, "--dask-tls", "a", "b", "c"], "--dask-tls only applies to --executor dask"),
    # --out that cannot be a result directory
    (["run", EXP, "--out", "/proc/nope/x"], "cannot create /proc/nope"),
]


@pytest.mark.parametrize("args,message", BAD_INPUT, ids=[" ".join(a)[:60] for a, _ in BAD_INPUT])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(cli, tmp_path, args, message):
    out = tmp_path / "out"
    extra = [] if "--out" in args else ["--out", str(out)]
    started = time.monotonic()
    code, _, err = cli(*args, *extra)
    assert code == 2, err
    assert err.startswith("dynamics: error: ") and message in err, err
    assert one_line(err)
    assert not out.exists() and not list(tmp_path.iterdir())
    assert time.monotonic() - started < 10  # refused up front, not after allocating


def test_cuda_without_cuda_is_one_line(cli, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    code, _, err = cli("run", EXP, "--set", "device=cuda", "--out", str(tmp_path / "o"))
    assert code == 2 and one_line(err) and "no CUDA device" in err and not (tmp_path / "o").exists()


def test_out_that_is_a_file_is_one_line(cli, tmp_path):
    f = tmp_path / "afile"
    f.write_text("mine\n")
    code, _, err = cli("sweep", EXP, *TINY, "--out", str(f))
    assert code == 2 and one_line(err) and "is a file, not a directory" in err
    assert f.read_text() == "mine\n"


def test_unwritable_out_is_one_line(cli, tmp_path, monkeypatch):
    import errno

    from dynamics.sweep import store

    def denied(*a, **k):
        raise PermissionError(errno.EACCES, "Permission denied", str(tmp_path / "ro"))

    monkeypatch.setattr(store.FileLock, "acquire", denied)
    code, _, err = cli("sweep", EXP, *TINY, "--out", str(tmp_path / "ro" / "x"))
    assert code == 2 and one_line(err) and "Permission denied" in err


def test_an_internal_error_is_one_line_exit_3_and_debug_shows_the_traceback(cli, tmp_path, monkeypatch):
    import dataclasses

    from dynamics.experiments import scan_snap_fig6 as fig6

    def broken(tables, base):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(fig6, "EXPERIMENT", dataclasses.replace(fig6.EXPERIMENT, summarize=broken))
    code, _, err = cli("sweep", EXP, *TINY, "--out", str(tmp_path / "a"))
    assert code == 3 and one_line(err)
    assert "internal error: ZeroDivisionError: a bug" in err and "dynamics --debug" in err
    assert not (tmp_path / "a" / "table.csv").exists()
    code, _, err = cli("--debug", "sweep", EXP, *TINY, "--out", str(tmp_path / "b"))
    assert code == 3 and "Traceback" in err and "ZeroDivisionError: a bug" in err


@pytest.fixture
def result(made, tmp_path):
    root = tmp_path / "results"
    shutil.copytree(made, root / EXP)
    return root


DAMAGE = {
    "truncated table": lambda d: (d / "table.csv").write_bytes((d / "table.csv").read_bytes()[:-25]),
    "empty table": lambda d: (d / "table.csv").write_text(""),
    "binary table": lambda d: (d / "table.csv").write_bytes(b"\xff\xfe\0\0garbage"),
    "edited table": lambda d: (d / "table.csv").write_text((d / "table.csv").read_text().replace("1,", "7,", 1)),
    "truncated runs": lambda d: (d / "runs.csv").write_bytes((d / "runs.csv").read_bytes()[:-9]),
    "corrupt manifest": lambda d: (d / "manifest.json").write_text('{"experiment": "scan-snap-fig6", "conf'),
    "empty manifest": lambda d: (d / "manifest.json").write_text(""),
    "manifest not an object": lambda d: (d / "manifest.json").write_text("[1, 2]"),
}


@pytest.mark.parametrize("command", ["table", "plot", "report"])
@pytest.mark.parametrize("damage", list(DAMAGE))
def test_damaged_results_are_one_line_naming_the_file(cli, result, command, damage):
    d = result / EXP
    DAMAGE[damage](d)
    before = {p.name: p.read_bytes() for p in d.iterdir() if p.is_file()}
    args = {"table": ["table", EXP, "--dir", str(d)], "plot": ["plot", EXP, "--dir", str(d)],
            "report": ["report", "--results", str(result)]}[command]
    code, out, err = cli(*args)
    if command == "table" and damage == "truncated runs":
        assert code == 2 and "runs.csv" in err  # every table is checked, not just the one printed
    assert code == 2, (out, err)
    assert one_line(err) and str(d) in err, err
    assert {p.name: p.read_bytes() for p in d.iterdir() if p.is_file()} == before  # no figure redrawn
    assert not (result / "report.html").exists()


def test_report_escapes_manifest_fields_and_directory_names(cli, result):
    evil = result / '<svg onload=alert(1)>"x'  # a directory name cannot hold "/", so no closing tag
    shutil.copytree(result / EXP, evil)
    m = json.loads((evil / "manifest.json").read_text())
    m["reference"] = '<script>alert("ref")</script>'
    m["wall_time_s"] = "<img src=x onerror=alert(2)>"
    (evil / "manifest.json").write_text(json.dumps(m))  # its file list no longer matters for the report
    code, _, err = cli("report", "--results", str(result))
    assert code == 0, err
    page = (result / "report.html").read_text()
    assert "<script>alert" not in page and "<img src=x" not in page and "<svg" not in page
    assert "&lt;svg onload=alert(1)&gt;&quot;x" in page and "&lt;script&gt;alert(&quot;ref&quot;)" in page
    assert page.count("<script>") == 1  # the page's own figure counter


@pytest.mark.parametrize("marker", ["/etc/hostname", "../outside.md", "results/../../outside.md", "docs/x.md",
                                    "results/link.md"])
def test_readme_inlines_files_under_results_only(cli, tmp_path, monkeypatch, marker):
    (tmp_path / "results").mkdir()
    (tmp_path / "outside.md").write_text("secret\n")
    (tmp_path / "results" / "link.md").symlink_to(tmp_path / "outside.md")
    readme = tmp_path / "README.md"
    text = f"# x\n<!-- results: {marker} -->\nold\n<!-- /results -->\n"
    readme.write_text(text)
    code, _, err = cli("readme", "--readme", str(readme))
    assert code == 2 and one_line(err) and "results/" in err
    assert readme.read_text() == text


def test_readme_inlines_a_results_file(cli, tmp_path):
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "t.md").write_text("| a |\n")
    readme = tmp_path / "README.md"
    readme.write_text("<!-- results: results/t.md -->\nold\n<!-- /results -->\n")
    assert cli("readme", "--readme", str(readme))[0] == 0
    assert "| a |" in readme.read_text()


def test_grid_over_seeds_keeps_cells_apart(cli, tmp_path):
    import pandas as pd

    args = [a for a in TINY if a not in ("--seeds", "1")]
    code, _, err = cli("sweep", EXP, *args, "--grid", "seeds=1,2", "--out", str(tmp_path / "s"))
    assert code == 0, err
    table = pd.read_csv(tmp_path / "s" / "table.csv")
    assert list(table.seeds) == [1, 2] and list(table.n_seeds) == [1, 2]


def test_fig4_diverged_runs_are_nan_and_counted_never_a_finite_metric():
    """eta_z = 1e30 blows up every run: the table must say so, not report an entropy of 0."""
    from dynamics import experiments, progress
    from dynamics.experiment import Context
    from dynamics.sweep import runner
    from dynamics.sweep.store import Store

    exp = experiments.get("scan-snap-fig4")
    p = runner.plan(exp, {"ratio": "1", "steps": "12", "seeds": "2", "batch": "16", "T": "16"},
                    {"eta_z": (1.0, 1e30)})
    tables = [exp.run_batch([c], Context(bar=progress.silent))[0] for c in p.configs]
    store = Store(Path(os.environ.get("TMPDIR", "/tmp")) / f"fig4-div-{os.getpid()}")
    try:
        for cid, t in zip(p.ids, tables):
            store.write_cell(cid, t)
        table = exp.summarize(runner.collect(p, store), p.base)["table"].set_index("eta_z")
    finally:
        shutil.rmtree(store.root, ignore_errors=True)
    assert table.loc[1e30, "n_diverged"] == 2 and math.isnan(table.loc[1e30, "distinct_entropy_final"])
    assert table.loc[1.0, "n_diverged"] == 0 and table.loc[1.0, "distinct_entropy_final"] > 0


def test_heartbeat_prints_cell_elapsed_and_eta_to_a_non_terminal():
    import io

    from dynamics.progress import Heartbeat

    stream = io.StringIO()
    with Heartbeat("exp", 10, interval=0.02, stream=stream) as beat:
        beat.update(4)
        time.sleep(0.15)
    line = stream.getvalue().splitlines()[0]
    assert line.startswith("dynamics: exp: cell 4 of 10, 0:00:00 elapsed, ETA ")


def test_heartbeat_eta_weighs_cells_by_their_work():
    """Two cheap cells done out of three, the third 100 times their work: the ETA is about 50 times the
    elapsed time, not half of it as counting cells would say."""
    from dynamics.progress import Heartbeat

    beat = Heartbeat("exp", 3, work=102.0)
    beat.started -= 10.0
    beat.update(2, work=2.0)
    eta = beat.line().rsplit("ETA ", 1)[1]
    h, m, sec = (int(x) for x in eta.split(":"))
    assert 490 <= 3600 * h + 60 * m + sec <= 520
    counted = Heartbeat("exp", 3)
    counted.started -= 10.0
    counted.update(2)
    assert counted.line().endswith("ETA 0:00:05")


# -- property tests of config parsing -------------------------------------------------------------
def _cls():
    from dynamics.experiments.scan_snap_fig6 import Fig6Config

    return Fig6Config


INT_KEYS = ["steps", "batch", "T", "num_common", "seed"]
FLOAT_KEYS = ["eta_z", "ratio", "momentum", "common_unnormalized_prob"]
PROPS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPS
@given(key=st.sampled_from(INT_KEYS), n=st.integers(min_value=0, max_value=2 ** 63 - 1))
def test_ints_round_trip(key, n):
    from dynamics.config import coerce

    assert coerce(_cls(), key, str(n)) == n and coerce(_cls(), key, f" {n} ") == n


@PROPS
@given(key=st.sampled_from(INT_KEYS), n=st.one_of(st.integers(min_value=2 ** 63), st.integers(max_value=-(2 ** 63) - 1)))
def test_ints_that_do_not_fit_are_user_errors(key, n):
    from dynamics.config import coerce
    from dynamics.errors import UserError

    with pytest.raises(UserError, match=key):
        coerce(_cls(), key, str(n))


@PROPS
@given(key=st.sampled_from(FLOAT_KEYS), x=st.floats(allow_nan=False, allow_infinity=False))
def test_finite_floats_round_trip(key, x):
    from dynamics.config import coerce

    assert coerce(_cls(), key, repr(x)) == x


@PROPS
@given(key=st.sampled_from(FLOAT_KEYS + ["steps"]),
       text=st.sampled_from(["inf", "-inf", "nan", "Infinity", "1e999", "-1e400", "NaN"]))
def test_non_finite_numbers_are_user_errors(key, text):
    from dynamics.config import coerce
    from dynamics.errors import UserError

    with pytest.raises(UserError, match=key):
        coerce(_cls(), key, text)


@PROPS
@given(key=st.sampled_from(["seed", "seeds"]), n=st.integers(max_value=-1))
def test_negative_seeds_are_user_errors(key, n):
    from dynamics.config import coerce
    from dynamics.errors import UserError

    with pytest.raises(UserError):
        coerce(_cls(), key, str(n))


@PROPS
@given(overrides=st.dictionaries(
    st.sampled_from(INT_KEYS + FLOAT_KEYS + ["seeds", "optimizer", "init", "normalize", "device", "dtype", "x"]),
    st.text(max_size=12), max_size=4))
def test_build_of_any_text_gives_a_valid_config_or_a_user_error(overrides):
    """Whatever a user types, building a config either succeeds with in-range values or is one UserError."""
    from dynamics.config import build, get
    from dynamics.errors import UserError

    try:
        cfg = build(_cls(), overrides)
    except UserError as exc:
        assert "\n" not in str(exc).strip()
        return
    for key in INT_KEYS + ["seeds"]:
        v = get(cfg, key)  # num_common sits in the data spec (data.num_common)
        assert isinstance(v, int) and -(2 ** 63) <= v < 2 ** 63 and (key not in ("seed", "seeds") or v >= 0)
    for key in FLOAT_KEYS:
        assert math.isfinite(get(cfg, key))


@PROPS
@given(values=st.lists(st.one_of(st.integers(-5, 10 ** 6), st.floats(-1e3, 1e3), st.sampled_from(["inf", "x", ""])),
                       min_size=1, max_size=5))
def test_grid_parsing_is_typed_or_a_user_error(values):
    from dynamics.errors import UserError
    from dynamics.sweep.grid import parse_grid

    text = ",".join(map(str, values))
    try:
        grid = parse_grid(_cls(), [f"eta_z={text}", f"steps={text}"])
    except UserError:
        return
    assert all(isinstance(v, float) and math.isfinite(v) for v in grid["eta_z"])
    assert all(isinstance(v, int) for v in grid["steps"])


def test_a_run_that_would_not_fit_in_memory_is_refused_with_the_estimate(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("DYNAMICS_MAX_MEMORY_GB", "0.001")
    code, _, err = cli("run", "scan-snap-fig4", "--set", "steps=500", "--out", str(tmp_path / "o"))
    assert code == 2 and one_line(err) and "a batch needs about" in err and "DYNAMICS_MAX_MEMORY_GB" in err
    assert not (tmp_path / "o").exists()


def test_a_grid_key_the_experiment_did_not_foresee_never_merges_cells(cli, tmp_path):
    """Fig. 6's summary knows nothing of `batch`; the runner summarises each value apart."""
    import pandas as pd

    code, _, err = cli("sweep", EXP, *TINY, "--grid", "batch=8,16", "--out", str(tmp_path / "s"))
    assert code == 0, err
    table = pd.read_csv(tmp_path / "s" / "table.csv")
    assert list(table.batch) == [8, 16] and (table.n_seeds == 1).all()


def test_runner_summarises_each_value_of_an_unforeseen_grid_key_apart():
    import dataclasses as dc

    import pandas as pd

    from dynamics.experiment import Experiment
    from dynamics.sweep import runner

    @dc.dataclass(frozen=True)
    class Cfg:
        a: int = 1
        b: int = 1
        seed: int = 0

    def pooled(tables, base):  # knows only `a`: any other key would be merged
        t = tables["runs"].groupby("a", as_index=False).x.mean()
        return {"table": t.assign(b_seen=base.b)}

    exp = Experiment(name="toy", summary="", reference="", config=Cfg, run_batch=None, grid={"a": (1, 2)},
                     summarize=pooled)
    p = runner.plan(exp, {}, {"b": (10, 20), "seed": (0, 1)})
    runs = pd.DataFrame([{**c, "x": float(c["a"] * c["b"] + c["seed"])} for c in p.cells])
    table = runner.summarize(p, {"runs": runs})["table"]
    assert list(table.columns[:2]) == ["b", "a"] and len(table) == 4
    assert table.set_index(["b", "a"]).x.to_dict() == {(10, 1): 10.5, (10, 2): 20.5, (20, 1): 20.5, (20, 2): 40.5}
    assert (table.b == table.b_seen).all()  # each part is summarised with its own config
