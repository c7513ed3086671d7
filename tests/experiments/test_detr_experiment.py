"""The dacdetr-gather experiment through the CLI: a tiny smoke run and bad input."""

from __future__ import annotations

import dataclasses

import pandas as pd
import pytest

from dynamics import config as C
from dynamics.errors import UserError
from dynamics.experiments.dacdetr_gather import CLAIMS, DacConfig

TINY = ["--set", "train.steps=4", "--set", "train.batch=1", "--set", "eval_images=6", "--set", "val_images=4",
        "--set", "probe_images=6", "--set", "probe.steps=2", "--set", "probe.batch=4", "--set", "checkpoints=2,4",
        "--set", "lrs=3e-3", "--set", "min_objects=2", "--set", "max_objects=4",
        "--set", "plane.trials=4", "--set", "plane.layers=2", "--set", "sweep_tau=0.01",
        "--set", "sweep_tau_s=0.002", "--set", "sweep_eta=0.5", "--set", "sweep_queries=20",
        "--set", "sweep_objects=3", "--set", "net.queries=8", "--set", "d=16", "--set", "heads=2",
        "--set", "ffn=16", "--set", "net.layers=2", "--seeds", "2", "--workers", "1"]


def test_smoke_run_writes_tables_figures_and_claims(cli, tmp_path):
    code, out, err = cli("run", "dacdetr-gather", "--quick", *TINY, "--out", str(tmp_path))
    assert code == 0, err
    for name in ("table.csv", "headline.md", "delta_ap.csv", "gather.csv", "curve.csv", "final.csv", "counts.csv",
                 "plane.csv", "plane_sweep.csv", "plane_limit.csv", "claims.csv", "delta_ap.png",
                 "gather_per_layer.png", "plane_sawtooth.png", "manifest.json"):
        assert (tmp_path / name).exists(), name
    claims = pd.read_csv(tmp_path / "claims.csv")
    assert len(claims) == 7 + 24 + 4
    assert set(claims.verdict) <= {"PASS", "FAIL", "INCONCLUSIVE"}
    # consistency claims hold by construction at any size (plane-sa-rep-disperses excepted: its first SA
    # layer acts on uniformly spread queries, see docs/dacdetr.md)
    by_id = claims.set_index("claim").verdict
    for cid in ("plane-ca-gathers", "plane-sa-avg-no-disperse", "plane-c-more-than-o", "plane-ca-hard-limit",
                "plane-sweep-signs", "detr-sa-init-no-disperse"):
        assert by_id[cid] == "PASS", cid
    curve = pd.read_csv(tmp_path / "curve.csv")
    # both arms x both losses x one lr x two seeds, at the two checkpoints
    assert len(curve) == 2 * 2 * 2 * 2 and set(curve.step) == {2, 4}
    assert curve.ap.between(0, 1).all() and curve.ap_val.between(0, 1).all()
    dap = pd.read_csv(tmp_path / "delta_ap.csv")
    assert set(dap.loss) == {"ia-bce", "focal"} and (dap.n == 2).all()
    counts = pd.read_csv(tmp_path / "counts.csv")
    assert set(counts.decoder) == {"probe", "heads"} and set(counts.affinity) == {"iou", "score"}


@pytest.mark.parametrize("setting,message", [
    ("max_size=1.5", "outside the canvas"),
    ("net.queries=0", "queries must be at least 1"),
    ("plane.queries=0", "at least 1 query"),
    ("queries=5", "net.queries=5 < max_objects=30"),  # the old flat name: the toy DETR's
    ("sweep_queries=0,10", "sweep_queries must be >= 1"),
    ("thresholds=0.5,1.2", "outside [0, 1]"),
    ("thresholds=-0.1", "outside [0, 1]"),
    ("pos_threshold=1.4", "outside [0, 1]"),
    ("cls_losses=bce", "cls_losses must be among"),
    ("lrs=0", "lrs must be positive"),
    ("checkpoints=0,10", "checkpoints must lie in [1, train.steps]"),
    ("net.canvas=64", "unknown config key 'net.canvas'"),
    ("train.lr=0.1", "unknown config key 'train.lr'"),
], ids=["box-outside-canvas", "zero-queries", "zero-plane-queries", "old-name-queries", "zero-sweep-queries",
        "threshold-above-1", "threshold-below-0", "pos-threshold", "unknown-loss", "zero-lr", "zero-checkpoint",
        "derived-canvas", "derived-lr"])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(cli, tmp_path, setting, message):
    out_dir = tmp_path / "res"
    code, out, err = cli("run", "dacdetr-gather", "--set", setting, "--out", str(out_dir))
    assert code == 2
    assert message in err
    assert len(err.strip().splitlines()) == 1
    assert not out_dir.exists()


# The default config as results written before DacConfig composed the library specs store it (flat).
FLAT = {"model": "detr", "plane_objects": 5, "plane_queries": 100, "plane_background": 50, "plane_layers": 6,
        "tau": 0.01, "tau_s": 0.002, "eta": 0.5, "radius": 0.05, "plane_trials": 200, "hard_tau": 0.0001,
        "sweep_tau": [0.003, 0.01, 0.03], "sweep_tau_s": [0.0005, 0.002, 0.008], "sweep_eta": [0.25, 0.5, 0.75],
        "sweep_queries": [25, 50, 100, 200], "sweep_objects": [2, 5, 10], "canvas": 32, "n_classes": 3,
        "min_objects": 10, "max_objects": 30, "min_size": 0.06, "max_size": 0.2, "d": 16, "heads": 2, "layers": 6,
        "queries": 100, "ffn": 32, "patch": 4, "steps": 3000, "batch": 1, "lrs": [0.0015, 0.003, 0.006],
        "warmup": 100, "cls_losses": ["ia-bce", "focal"], "loss": "all", "pos_threshold": 0.4, "max_pos": 6,
        "iou_weight": 0.7, "assign_boxes": "o", "checkpoints": [500, 1000, 2000, 3000], "seeds": 6, "seed": 0,
        "thresholds": [0.3, 0.5, 0.7], "eval_images": 256, "val_images": 128, "probe_images": 128,
        "probe_steps": 150, "probe_batch": 16, "probe_lr": 0.001, "nms": 0.8, "threads": 1, "device": "cpu"}


def test_flat_configs_of_earlier_results_build_and_keep_every_claim_fingerprint():
    cfg = C.build(DacConfig, FLAT)
    assert cfg == DacConfig() and C.build(DacConfig, dataclasses.asdict(cfg)) == cfg
    # computed with the flat DacConfig (commit f6ee13c): `dynamics verify` on its results must not say STALE
    fp = {s.id: s.fingerprint(cfg) for s in CLAIMS}
    assert {k: fp[k] for k in ("plane-ca-gathers", "plane-ca-hard-limit", "plane-sweep-signs", "dac-ap-gain")} == {
        "plane-ca-gathers": "5e98ec9486ca", "plane-ca-hard-limit": "d3c880e4d09d",
        "plane-sweep-signs": "f99180c49a3b", "dac-ap-gain": "108328215306"}
    old = C.build(DacConfig, FLAT | {"plane_trials": 7, "plane_queries": 9, "queries": 50, "layers": 3, "steps": 40,
                                     "checkpoints": [20, 40], "batch": 2, "probe_steps": 5, "probe_batch": 4,
                                     "probe_lr": 0.01})
    assert (old.plane.trials, old.plane.queries, old.net.queries, old.net.layers, old.plane.layers) == (7, 9, 50, 3, 6)
    assert (old.train.steps, old.train.batch, old.probe.steps, old.probe.batch, old.probe.lr) == (40, 2, 5, 4, 0.01)


def test_a_shared_quantity_has_one_key_and_every_key_has_help():
    names = set(C.keys(DacConfig))
    for derived in ("net.canvas", "net.n_classes", "train.lr", "train.c_decoder", "train.cls_loss", "train.device",
                    "study.root", "probe.cls_loss"):
        assert derived not in names, derived
    # patch 6 divides the new canvas, not the old one: the model is validated once it has the scenes' canvas
    cfg = C.build(DacConfig, {"canvas": 36, "patch": 6, "n_classes": 5, "model": "dac-detr", "loss": "focal",
                              "seed": 3, "lrs": "0.01,0.02", "device": "cpu"})
    assert (cfg.net.canvas, cfg.net.n_classes, cfg.net.patch) == (36, 5, 6)
    assert (cfg.train.c_decoder, cfg.train.cls_loss, cfg.train.lr, cfg.probe.cls_loss) == (True, "focal", 0.01, "focal")
    assert cfg.study.root == 3 and cfg.study.cls_losses == ("ia-bce", "focal")
    assert cfg.study_spec().cls_losses == ("focal",)
    assert all(help_text for *_, help_text in C.describe(DacConfig))


def test_bare_lr_must_be_qualified():
    """`lr` alone would silently set the probes' rate; the training rates are `lrs`."""
    with pytest.raises(UserError, match="lrs"):
        C.build(DacConfig, {"lr": 0.01})
    assert C.build(DacConfig, {"probe.lr": 0.01}).probe.lr == 0.01
