"""Using dynamics from Python: a Y/Z simulation, an experiment in memory, and a figure of your own.

Run with ``python docs/example_api.py`` (about 20 s on 2 cores); tests/test_api.py executes it.
"""

from __future__ import annotations

import dynamics as dyn
from dynamics import stats
from dynamics.report.figures import subplots
from dynamics.scan_snap import SyntheticSpec, simulate


def main() -> None:
    # 1. Scan and Snap's Y/Z model on a Syn-Small-like spec, eta_Y = 10 eta_Z against eta_Y = eta_Z.
    spec = SyntheticSpec(num_unique_per_next=8)
    entropy = {}
    for eta_y in (1.0, 10.0):
        df = simulate(spec, eta_y=eta_y, eta_z=1.0, seeds=4, steps=30).to_frame()
        d = df[df.distinct].copy()
        d["w"] = d.c / d.groupby(["seed", "step", "cls"]).c.transform("sum")
        h = -(d.w * d.w.clip(lower=1e-300).map(__import__("math").log)).groupby([d.seed, d.step, d.cls]).sum()
        entropy[eta_y] = h.groupby(["seed", "step"]).mean().unstack("seed")
    # final distinct-token entropy, paired over the 4 shared seeds (Thm. 4(c): higher with larger eta_Y)
    diff = stats.paired(entropy[10.0].iloc[-1].values, entropy[1.0].iloc[-1].values)
    print(f"final entropy, eta_Y=10 minus eta_Y=1: {diff.value:.3f} [{diff.low:.3f}, {diff.high:.3f}] (n={diff.n})")

    fig, ax = subplots(figsize=(4, 3))
    for eta_y, h in entropy.items():
        ax.plot(h.index, h.mean(axis=1), label=f"$\\eta_Y$ = {eta_y:g}")
    ax.set(xlabel="SGD step", ylabel="distinct-token entropy (nats)")
    ax.legend()

    # 2. A whole experiment in memory: tables, decided claims, figures.
    res = dyn.run("scan-snap-fig4", quick=True)
    print(res)
    print(res.tables["headline"].round(3).to_string(index=False))


if __name__ == "__main__":
    main()
