"""dynamics.config: configs composed from specs (nested frozen dataclasses) and their keys."""

from __future__ import annotations

import dataclasses
from typing import ClassVar, Literal

import pytest

from dynamics import config as C
from dynamics.errors import UserError


@dataclasses.dataclass(frozen=True)
class Data:
    n: int = C.field(2, "classes")
    width: int = C.field(4, "data width")
    kind: Literal["a", "b"] = C.field("a", "sampler")

    def __post_init__(self):
        C.require(self.n >= 1, f"n must be >= 1, got {self.n}")


@dataclasses.dataclass(frozen=True)
class Model:
    width: int = C.field(8, "model width")
    depth: int = C.field(2, "layers")
    device: str = C.field("cpu", "torch device (execution only)")


@dataclasses.dataclass(frozen=True)
class Cfg:
    data: Data = C.field(Data(n=3), "data model")
    model: Model = C.field(Model(), "network")
    steps: int = C.field(10, "steps")
    seed: int = C.field(0, "root seed")
    threads: int = C.field(1, "torch threads (execution only)")

    def __post_init__(self):
        C.require(self.steps >= self.data.n, "steps must be at least n")


@dataclasses.dataclass(frozen=True)
class Shared:
    """The model's width is the data's (derived: no key); a probe network has its own depth, so the bare
    ``depth`` names two keys, but an old flat config's ``depth`` (and ``model_depth``) meant the model's."""

    RENAMED: ClassVar[dict[str, str]] = {"model_depth": "model.depth", "depth": "model.depth"}

    data: Data = C.field(Data(), "data model")
    model: Model = C.field(Model(), "network (width: the data's)", derived=("width",))
    probe: Model = C.field(Model(depth=1), "probe network")
    steps: int = C.field(10, "steps")

    def __post_init__(self):
        object.__setattr__(self, "model", dataclasses.replace(self.model, width=self.data.width))


def test_a_derived_spec_field_is_no_key_and_follows_its_source():
    assert "model.width" not in C.keys(Shared)
    cfg = C.build(Shared, {"data.width": 6})
    assert cfg.model.width == 6 and cfg.probe.width == 8
    with pytest.raises(UserError, match="unknown config key 'model.width'"):
        C.build(Shared, {"model.width": 6})
    assert C.build(Shared, dataclasses.asdict(cfg)) == cfg  # a manifest holds the derived value: rebuilt alike
    assert [r[0] for r in C.describe(Shared)] == ["data.n", "data.width", "data.kind", "model.depth", "model.device",
                                                   "probe.width", "probe.depth", "probe.device", "steps"]


def test_renamed_keys_read_old_flat_configs_and_claim_inputs():
    old = {"n": 2, "width": 5, "kind": "b", "model_depth": 4, "steps": 10}  # a flat config before the specs
    cfg = C.build(Shared, {k: v for k, v in old.items() if k != "width"} | {"data.width": 5})
    assert (cfg.model.depth, cfg.data.width, cfg.model.width, cfg.probe.depth) == (4, 5, 5, 1)
    assert C.get(cfg, "model_depth") == 4 and C.get(cfg, "depth") == 4  # as claim inputs written then
    assert C.build(Shared, {"depth": 3}).model.depth == 3 and C.build(Shared, {"probe.depth": 3}).probe.depth == 3
    with pytest.raises(UserError, match="ambiguous: write one of data.width, probe.width"):  # not renamed
        C.build(Shared, {"width": 5})
    with pytest.raises(UserError, match="given twice"):  # an old name is a spelling of the key, not a second key
        C.build(Shared, {"model_depth": 4, "model.depth": 5})
    with pytest.raises(UserError, match="ambiguous"):  # only the class that declares a rename has it
        C.build(Cfg, {"width": 5})


def test_qualified_and_unique_bare_keys_set_nested_fields():
    cfg = C.build(Cfg, {"data.n": "5", "depth": "3", "model.width": 16, "steps": "20"})
    assert cfg.data == Data(n=5) and cfg.model == Model(width=16, depth=3) and cfg.steps == 20
    assert C.build(Cfg, {}).data.n == 3  # the spec field's default instance supplies the defaults
    base = C.build(Cfg, {"kind": "b"})
    assert C.build(Cfg, {"n": 4}, base).data == Data(n=4, kind="b")  # the rest of the base spec is kept


def test_an_ambiguous_bare_key_lists_the_qualified_choices():
    with pytest.raises(UserError, match=r"config key 'width' is ambiguous: write one of data.width, model.width$"):
        C.build(Cfg, {"width": "3"})


def test_unknown_keys_suggest_the_closest_one():
    with pytest.raises(UserError, match=r"unknown config key 'dpth' \(did you mean 'depth'\?\)"):
        C.build(Cfg, {"dpth": "3"})
    with pytest.raises(UserError, match=r"unknown config key 'model.dpth' \(did you mean 'model.depth'\?\)"):
        C.build(Cfg, {"model.dpth": "3"})


def test_nested_values_are_coerced_and_validated_by_the_spec_and_the_config():
    with pytest.raises(UserError, match=r"data.kind='c' is not one of a, b"):
        C.build(Cfg, {"data.kind": "c"})
    with pytest.raises(UserError, match=r"data.n='x': expected int"):
        C.build(Cfg, {"n": "x"})
    with pytest.raises(UserError, match="n must be >= 1, got 0"):  # the spec's __post_init__
        C.build(Cfg, {"data.n": "0"})
    with pytest.raises(UserError, match="steps must be at least n"):  # then the config's
        C.build(Cfg, {"data.n": "50"})
    with pytest.raises(UserError, match="given twice"):
        C.build(Cfg, {"n": 4, "data.n": 5})
    with pytest.raises(UserError, match=r"data is a group of keys: set them one by one \(data.KEY=VALUE"):
        C.build(Cfg, {"data": "4"})


def test_nested_and_flat_saved_configs_build_back():
    cfg = C.build(Cfg, {"data.n": 4, "depth": 5})
    nested = dataclasses.asdict(cfg)  # what a manifest stores
    assert nested["data"] == {"n": 4, "width": 4, "kind": "a"}
    assert C.build(Cfg, nested) == cfg
    # a config written before ``n`` and ``depth`` moved into specs: flat, under unique bare names
    assert C.build(Cfg, {"n": 4, "depth": 5, "steps": 10, "seed": 0}) == cfg
    assert C.build(Cfg, {"data": Data(n=4), "model": {"depth": 5}}) == cfg


def test_short_names_flat_and_get():
    assert [C.short_name(Cfg, k) for k in ("data.n", "data.width", "model.depth", "steps")] == \
        ["n", "data.width", "depth", "steps"]
    cfg = C.build(Cfg, {})
    assert C.flat(dataclasses.asdict(cfg)) == {"n": 3, "data.width": 4, "kind": "a", "model.width": 8, "depth": 2,
                                               "device": "cpu", "steps": 10, "seed": 0, "threads": 1}
    assert C.get(cfg, "n") == 3 and C.get(cfg, "model.width") == 8 and C.get(cfg, "nothing", None) is None


def test_describe_lists_nested_keys_with_qualified_names_types_defaults_and_help():
    rows = {r[0]: r[1:] for r in C.describe(Cfg)}
    assert list(rows) == ["data.n", "data.width", "data.kind", "model.width", "model.depth", "model.device",
                          "steps", "seed", "threads"]
    assert rows["data.n"] == ("int", 3, "classes")  # the default from Cfg's Data(n=3), not Data's own 2
    assert rows["data.kind"] == ("one of a|b", "a", "sampler")


def test_execution_keys_stay_out_of_the_cell_hash_at_any_depth():
    from dynamics.sweep.grid import cell_id

    base = dataclasses.asdict(C.build(Cfg, {}))
    moved = dataclasses.asdict(C.build(Cfg, {"model.device": "meta", "threads": 4}))
    assert cell_id("x", base) == cell_id("x", moved)
    assert cell_id("x", base) != cell_id("x", dataclasses.asdict(C.build(Cfg, {"n": 4})))
    # the same values, flat under the same names, hash alike: moving fields into a spec keeps cell names
    assert cell_id("x", C.flat(base)) == cell_id("x", base)


def _experiment(grid):
    import pandas as pd

    from dynamics.experiment import Experiment

    def run_batch(cfgs, ctx):
        return [{"table": pd.DataFrame({"value": [c.data.n * 10 + c.model.depth]})} for c in cfgs]

    return Experiment(name="nested-test", summary="", reference="", config=Cfg, run_batch=run_batch, grid=grid)


def test_a_grid_over_nested_keys_in_any_spelling(tmp_path):
    from dynamics.sweep import runner
    from dynamics.sweep.grid import parse_grid

    exp = _experiment({"data.n": (1, 2)})
    p = runner.plan(exp, {"model.depth": "3"}, parse_grid(Cfg, ["n=2,3"]))
    assert p.grid == {"n": (2, 3)}  # the experiment's data.n entry replaced, under its short name
    assert [(c.data.n, c.model.depth) for c in p.configs] == [(2, 3), (3, 3)]
    p = runner.plan(exp, {"depth": 4}, parse_grid(Cfg, ["model.width=16,32"]))
    assert p.grid == {"n": (1, 2), "model.width": (16, 32)} and len(p.configs) == 4
    runner.execute(p, tmp_path / "out")
    import pandas as pd

    table = pd.read_csv(tmp_path / "out" / "table.csv")
    assert list(table.columns) == ["n", "model.width", "value"] and table.value.tolist() == [14, 14, 24, 24]
    # a checkpoint whose config is flat (written before fields moved into specs) resumes: nothing reruns
    import json

    index = tmp_path / "out" / ".cells" / "run.json"
    saved = json.loads(index.read_text())
    saved["config"] = C.flat(saved["config"])
    index.write_text(json.dumps(saved))
    calls = []
    exp2 = dataclasses.replace(exp, run_batch=lambda cfgs, ctx: calls.append(cfgs) or exp.run_batch(cfgs, ctx))
    runner.execute(runner.plan(exp2, {"depth": 4}, parse_grid(Cfg, ["model.width=16,32"])), tmp_path / "out",
                   resume=True)
    assert calls == [] and pd.read_csv(tmp_path / "out" / "table.csv").equals(table)
    with pytest.raises(UserError, match="ambiguous"):
        parse_grid(Cfg, ["width=1,2"])
    with pytest.raises(UserError, match="given twice"):
        runner.plan(exp, grid={"n": (1,), "data.n": (2,)})


def test_the_python_api_takes_qualified_and_bare_keys():
    import dynamics as dyn

    res = dyn.run("scan-snap-fig4", quick=True, seeds=2, steps=12, **{"data.num_unique_per_next": 5})
    assert res.manifest["config"]["data"]["num_unique_per_next"] == 5
    assert res.manifest["config"]["steps"] == 12
    with pytest.raises(UserError, match="unknown config key 'num_lst'"):
        dyn.run("scan-snap-fig4", quick=True, num_lst=2)
