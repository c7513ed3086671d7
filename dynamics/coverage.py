"""Coverage map: for each paper, every main theorem, lemma with a numeric consequence, figure and table,
and what this package's reproduction claims say about it.

One :class:`Item` per row, listed from the papers (their theorem, figure and table numbering; arXiv
versions: Scan and Snap 2305.16380, Levine et al. 2006.12467 v3 / NeurIPS 2020, DeepViT 2103.11886,
DAC-DETR NeurIPS 2023, JoMA 2310.00535).  ``claims`` names the claims behind a row as
``experiment/claim``; the row's status is derived from their verdicts in the verification table,
counting **reproductions only** (a consistency check is a test of the code, not evidence about the paper):

* reproduced: every reproduction behind the row PASSes;
* contradicted: at least one FAILs (the detail column says how many PASS beside it);
* inconclusive: none FAILs but at least one is INCONCLUSIVE or STALE;
* not attempted: no reproduction claim stands behind the row; ``reason`` says why.
"""

from __future__ import annotations

import dataclasses

import pandas as pd

from .sweep.store import to_markdown

SCAN = "Tian et al. 2023, Scan and Snap"
LEVINE = "Levine et al. 2020, Limits to Depth Efficiencies of Self-Attention"
DEEPVIT = "Zhou et al. 2021, DeepViT"
DAC = "Hu et al. 2023, DAC-DETR"
JOMA = "Tian et al. 2023, JoMA"
PAPERS = (SCAN, LEVINE, DEEPVIT, DAC, JOMA)
STATUSES = ("reproduced", "contradicted", "inconclusive", "not attempted")


@dataclasses.dataclass(frozen=True)
class Item:
    paper: str
    item: str  # "Thm. 2", "Fig. 6", "Table 1"
    states: str  # what the paper states, in a line
    claims: tuple[str, ...] = ()  # experiment/claim ids behind the row
    reason: str = ""  # why nothing (or nothing that could fail) tests it


ITEMS: tuple[Item, ...] = (
    # --- Scan and Snap ---------------------------------------------------------------------------
    Item(SCAN, "Lemma 1", "exact gradient dynamics of Y and Z (batch 1)", (),
         "an identity the simulator implements; checked by tests, not a prediction"),
    Item(SCAN, "Lemma 2 / Eq. 5", "attention in the T -> infinity limit", ("scan-snap-theory/h-sgd-T512",
         "scan-snap-theory/h-sgd-T4096")),
    Item(SCAN, "Lemma 3", "W = F^T Y follows w_j' = eta_Y 1[j=n](e_n - alpha_n) under the modified gradient",
         ("scan-snap-theory/eq122-common-logit-ode-lemma3",)),
    Item(SCAN, "Lemma 5 / Eq. 33", "discrete-step h*(t) of the query-key logit growth",
         ("scan-snap-theory/h-gd",)),
    Item(SCAN, "Lemma 6 / Eq. 45", "continuous h(t) solved by Lambert W", ("scan-snap-theory/h-ode",)),
    Item(SCAN, "Lemma 7", "gap between the discrete h* and the continuous h stays in [0, 2 eta_Y / M]",
         ("scan-snap-closed-forms/lemma7-gap",)),
    Item(SCAN, "Thm. 1", "form of the back-propagated gradient to Z at t >> K^2", (),
         "no experiment measures the gradient's form against the theorem"),
    Item(SCAN, "Thm. 2 (a)", "scan: the logit of a distinct token grows", (
        "scan-snap-theory/thm2-signs-ode", "scan-snap-theory/thm2-signs-sgd-T512",
        "scan-snap-theory/thm2-signs-sgd-T4096", "scan-snap-wikitext/thm2a-distinct-up-population",
        "scan-snap-wikitext/thm2a-distinct-up-windows")),
    Item(SCAN, "Thm. 2 at finite T", "the T -> infinity signs hold once T P(l|n) is large; our O(1/T) correction "
         "predicts where each sign flips (docs/scan_snap_finite_t.md)", (
             "scan-snap-finite-t/ft-distinct-boundary-geometric", "scan-snap-finite-t/ft-distinct-boundary-theory",
             "scan-snap-finite-t/ft-common-boundary-theory", "scan-snap-finite-t/ft-sign-agreement",
             "scan-snap-wikitext-resampled/wt-resampled-sign-agreement",
             "scan-snap-wikitext-windows/wt-windows-sign-agreement", "scan-snap-wikitext-windows/wt-windows-vs-resampled")),
    Item(SCAN, "Thm. 2 (b) / Cor. 2", "scan: the logit of a common token falls", (
        "scan-snap-wikitext/thm2b-common-down-population", "scan-snap-wikitext/thm2b-common-down-windows",
        "scan-snap-fig4/common-mass-falls")),
    Item(SCAN, "Thm. 3 / Eq. 11", "distinct tokens grow in the order of their co-occurrence P(l|n)", (
        "scan-snap-theory/thm3-ordering", "scan-snap-theory/thm3-relative-gain",
        "scan-snap-wikitext/thm3-order-population", "scan-snap-wikitext/thm3-order-windows")),
    Item(SCAN, "Thm. 3 corollary (Eq. 98)", "an invariant of the distinct-token logits", (
        "scan-snap-theory/thm3-invariant",)),
    Item(SCAN, "Thm. 4 (t_0)", "snap: the phase transition at t_0 = 2 K ln M / eta_Y", (
        "scan-snap-phase/t0-scaling", "scan-snap-phase/t0-scaling-assumption1", "scan-snap-phase/thm4a-earlier",
        "scan-snap-t0-law/t0-exponent-K", "scan-snap-t0-law/t0-exponent-eta", "scan-snap-t0-law/t0-exponent-lnM",
        "scan-snap-t0-law/t0-exponent-lnM-exact")),
    Item(SCAN, "Thm. 4 (b, c)", "larger rates give sparser attention; larger eta_Y at fixed eta_Z denser", (
        "scan-snap-phase/thm4b-sparser", "scan-snap-phase/thm4c-denser")),
    Item(SCAN, "Thm. 4 / Eq. 13, 122", "the common-token logit after the transition", (
        "scan-snap-theory/eq122-common-logit-ode",)),
    Item(SCAN, "Cor. 1", "reaching ||e_n - alpha_n|| <= eps takes O(K / (eps eta_Y) log(M / eps)) steps", (),
         "no experiment measures the convergence time against the bound"),
    Item(SCAN, "Fig. 3", "the bound e^{2 B_n} on the growth factor is larger for smaller eta_Y", (
        "scan-snap-closed-forms/fig3-ordering",)),
    Item(SCAN, "Fig. 4", "Syn-Small, SGD: common weight falls and c_n concentrates within ~10 steps; "
         "eta_Y = 10 eta_Z converges faster and stays less sparse", (
             "scan-snap-fig4/common-mass-falls", "scan-snap-fig4/distinct-concentrates",
             "scan-snap-fig4/top-distinct-grows", "scan-snap-fig4/faster-convergence", "scan-snap-fig4/less-sparse")),
    Item(SCAN, "Fig. 5", "Syn-Small with Adam: learning rates select different distinct tokens", (
        "scan-snap-fig5/adam-common-mass-falls", "scan-snap-fig5/adam-distinct-sparsifies",
        "scan-snap-fig5/adam-lr-selects-different-tokens")),
    Item(SCAN, "Fig. 6", "Syn-Medium: entropy falls with eta_Z and rises with eta_Y / eta_Z past about 2", (
        "scan-snap-fig6/entropy-falls-with-eta_z", "scan-snap-fig6/entropy-rises-with-eta_y",
        "scan-snap-wikitext/entropy-falls-with-eta_z-population", "scan-snap-wikitext/entropy-rises-with-eta_y-population",
        "scan-snap-wikitext/entropy-falls-with-eta_z-windows", "scan-snap-wikitext/entropy-rises-with-eta_y-windows")),
    Item(SCAN, "Fig. 7", "WikiText-2: lowest-layer attention becomes sparse and then freezes", (
        "wikitext-attention/attention-sparsifies", "wikitext-attention/attention-freezes",
        "wikitext-attention/attention-sparsifies-deep", "wikitext-attention/attention-freezes-deep")),
    Item(SCAN, "Fig. 8", "discrete h* against continuous h", ("scan-snap-closed-forms/lemma7-gap",)),
    Item(SCAN, "Fig. 9", "B_n(t_0) depends only on K, M and nu", ("scan-snap-closed-forms/fig9-b-t0",)),
    Item(SCAN, "App. Fig. 11", "recall of distinct tokens above a threshold falls as eta_Z grows", (
        "scan-snap-fig11-12/fig11-recall-falls-with-eta_z",)),
    Item(SCAN, "App. Fig. 12", "recall of distinct tokens above a threshold rises with eta_Y / eta_Z", (
        "scan-snap-fig11-12/fig12-recall-rises-with-ratio",)),
    Item(SCAN, "Fig. 10 (App. G)", "WikiText: attention entropy falls as the learning rate grows", (
        "wikitext-attention/entropy-falls-with-lr",)),
    # --- Levine et al. 2020 ----------------------------------------------------------------------
    Item(LEVINE, "Thm. 1", "upper bound on the separation rank: past L = log_3 d_x depth and width are "
         "interchangeable", ("depth-width-rank/below-degree-bound", "depth-width-rank/layer-worth-shrinks-with-depth",
                             "depth-width-rank/deep-slope-L2-N2", "depth-width-rank/deep-slope-L3-N2",
                             "depth-width-rank/deep-slope-L2-N4", "depth-width-rank/deep-slope-L2-N6",
                             "depth-width-rank/deep-slope-L3-N4", "depth-width-rank/deep-slope-L3-N6")),
    Item(LEVINE, "Thm. 2", "lower bound: below L = log_3 d_x depth is exponentially more efficient than width", (
        "depth-width-rank/layer-worth-grows-with-width", "depth-width-rank/shallow-exponent-L1-N2",
        "depth-width-rank/shallow-exponent-L2-N2", "depth-width-rank/shallow-exponent-L2-N4",
        "depth-width-rank/shallow-exponent-L2-N6",
        "depth-width-budget/wikitext-shallow-loses", "depth-width-bytes/bytes-shallow-loses-largest-budget",
        "depth-width-trained/ts-linear-shallower-loses-at-teacher-width",
        "depth-width-trained/ts-softmax-shallower-loses-at-teacher-width",
        "depth-width-trained/ts-linear-width-ratio", "depth-width-trained/ts-softmax-width-ratio")),
    Item(LEVINE, "Sec. 4 (grid tensors)", "the grid-tensor matricization rank lower-bounds the separation rank", (
        "depth-width-rank/ranks-agree-primes-seeds", "depth-width-rank/rank-stable-when-templates-grow")),
    Item(LEVINE, "Transition L = log_3 d_x", "the depth threshold grows as log_3 of the width", (
        "depth-width-rank/crossover-slope-N2", "depth-width-rank/crossover-slope-N4",
        "depth-width-rank/crossover-slope-N6", "depth-width-rank/crossover-offset-N2",
        "depth-width-rank/threshold-slope-closed-form")),
    Item(LEVINE, "Table 1", "minimal depth for an efficient parameter distribution per width", (
        "depth-width-rank/threshold-slope-closed-form",)),
    Item(LEVINE, "Fig. 1", "Kaplan et al.'s loss against size for L = 1, 2, 3, 6, > 6 departs at L = 6", (),
         "needs Kaplan et al.'s language-model training at scale; not attempted on this machine"),
    Item(LEVINE, "Sec. 5 experiments (depth 6-48)", "at a fixed size the best depth grows with the size; "
         "past the threshold the shape matters little", (
             "depth-width-budget/wikitext-best-depth-rises-with-budget", "depth-width-budget/wikitext-flat-above-threshold",
             "depth-width-bytes/bytes-optimal-depth-not-decreasing")),
    Item(LEVINE, "Optimal-width fit (v3)", "d_x^opt = exp(5.039 + 0.0555 L)", (
        "depth-width-budget/wikitext-fit-b-positive", "depth-width-budget/wikitext-fit-b-matches-paper",
        "depth-width-bytes/bytes-optimal-depth-matches-paper-fit")),
    Item(LEVINE, "1T projection (v3 abstract)", "width 30K optimal for a 1-trillion-parameter network", (
        "depth-width-theory/fit-1T-width", "depth-width-theory/fit-1T-depth")),
    Item(LEVINE, "GPT-3 projection (v3 abstract)", "GPT-3 175B is too deep for its size", (
        "depth-width-theory/gpt3-175B-too-deep",)),
    Item(LEVINE, "Table 2 / App. (model shapes)", "depth-width allocations of existing networks against the fit", (
        "depth-width-theory/fit-bigscience-70-layers",)),
    # --- DeepViT ---------------------------------------------------------------------------------
    Item(DEEPVIT, "Fig. 1", "ImageNet top-1 of ViT saturates with depth; DeepViT keeps improving", (
        "deepvit-collapse/vanilla-accuracy-saturates", "deepvit-collapse/reattention-accuracy-keeps-improving",
        "deepvit-collapse/reattention-beats-vanilla-at-deepest")),
    Item(DEEPVIT, "Fig. 2 / Sec. 3", "attention maps of deep blocks become similar (attention collapse)", (
        "deepvit-collapse/similar-blocks-grow-with-depth",)),
    Item(DEEPVIT, "Fig. 3 (a)", "cross-layer similarity ratio above 90% after block 17 of 32", (),
         "the per-block ratio is plotted (similarity_ratio_per_block.png) but no claim was registered"),
    Item(DEEPVIT, "Fig. 3 (b)", "the share of similar blocks grows with depth", (
        "deepvit-collapse/similar-blocks-grow-with-depth",)),
    Item(DEEPVIT, "Fig. 3 (c)", "similarity between heads of one block stays below about 30%", (),
         "inter-head similarity is not measured"),
    Item(DEEPVIT, "Sec. 4.1 (wider embedding)", "a wider embedding (256 -> 768) reduces the similar blocks", (
        "deepvit-collapse/similar-blocks-fall-with-width",)),
    Item(DEEPVIT, "Sec. 4.2 / Eq. 4 (Re-attention)", "mixing heads with a learnable Theta regenerates diverse maps", (
        "deepvit-collapse/reattention-fewer-similar-blocks",)),
    Item(DEEPVIT, "Table 1", "ViT with 16/24/32 blocks: similar blocks and ImageNet top-1", (
        "deepvit-collapse/similar-blocks-grow-with-depth", "deepvit-collapse/vanilla-accuracy-saturates")),
    Item(DEEPVIT, "Re-attention vs ViT table (README)", "DeepViT has 0 similar blocks where ViT has 5-15", (
        "deepvit-collapse/reattention-fewer-similar-blocks",)),
    Item(DEEPVIT, "ImageNet comparison tables", "DeepViT-S/L top-1 against ViT, DeiT and CNNs", (),
         "ImageNet-scale training is beyond this machine"),
    Item(DEEPVIT, "Ablations (Sec. 5)", "Re-attention against other ways to diversify attention", (),
         "the alternatives (temperature, dropping attention) were not implemented"),
    Item(DEEPVIT, "Attention-map figures", "visualised maps of ViT and DeepViT blocks", (),
         "qualitative; the maps are drawn (attention_maps_*.png) without a claim"),
    # --- DAC-DETR --------------------------------------------------------------------------------
    Item(DAC, "Fig. 1 / Sec. 1", "cross-attention gathers queries around an object; self-attention disperses them",
         tuple(f"dacdetr-gather/{s}-L{l}-{a}" for a in ("iou", "score") for l in range(6)
               for s in ("ca-gathers", "sa-disperses"))),
    Item(DAC, "Sec. 3 (one-to-many)", "the auxiliary decoder's one-to-many assignment improves gathering", (
        "dacdetr-gather/dac-c-stream-more-queries",)),
    Item(DAC, "README figure (analyse)", "DAC-DETR has more queries per object, and better closest queries", (
        "dacdetr-gather/dac-raises-o-queries",)),
    Item(DAC, "Fig. 2", "the DAC-DETR architecture (auxiliary decoder without self-attention)", (),
         "an architecture diagram: nothing to measure"),
    Item(DAC, "Table 1", "Deformable-DETR, 12 epochs: +3.4 AP with DAC", ("dacdetr-gather/dac-ap-gain",
                                                                          "dacdetr-gather/dac-ap-gain-focal")),
    Item(DAC, "Table 2", "DINO and IoU-aware losses: 50.9 AP (R50), 58.1 AP (Swin-L)", (),
         "COCO-scale training is beyond this machine"),
    Item(DAC, "Ablation tables", "contribution of the auxiliary decoder, one-to-many and sharing", (),
         "COCO-scale ablations are beyond this machine"),
    # --- JoMA (docs/joma.md; equations checked against the official scripts, the paper text was not reachable)
    Item(JOMA, "Thm. 1 (exp attention)", "z = 1/2 sum_k ||v_k||^2 + c along the joint dynamics", (
        "joma-invariant/exp-exact", "joma-invariant/exp-rate-ratio", "joma-invariant/first-order-error"),
         "an identity of gradient flow, checked as consistency (step-size error only)"),
    Item(JOMA, "Thm. 1 (softmax) / Fig. 2", "the invariant's prediction correlates with the logits (NC -> 1)", (
        "joma-invariant/softmax-fig2-nc", "joma-invariant/softmax-relu-nc")),
    Item(JOMA, "Thm. 1 assumptions", "continuous time, plain gradient", (
        "joma-invariant/large-steps-break", "joma-invariant/adam-breaks"),
         "consistency checks of where the invariant stops holding"),
    Item(JOMA, "Sec. 4 (nonlinear)", "nonlinear activation: attention sparsifies, then densifies", (
        "joma-attention/nonlinear-sparse-then-dense", "joma-attention/nonlinear-sparsifies-first",
        "joma-fig4/sparse-then-dense", "joma-fig4/sparsifies-first", "joma-attention/nonlinearity-causes-rebound")),
    Item(JOMA, "Sec. 4 (linear)", "linear activation: attention only sparsifies (as Scan and Snap)", (
        "joma-attention/linear-only-sparse", "joma-attention/linear-2layer-only-sparse", "joma-fig4/linear-only-sparse")),
    Item(JOMA, "Fig. 4", "salient components are learned first; the turn comes as they saturate", (
        "joma-fig4/salient-first", "joma-fig4/turn-at-top-saturation")),
    Item(JOMA, "Sec. 4 (method)", "MLP-only dynamics with attention integrated out predict the joint ones", (
        "joma-attention/turning-step-predicted",)),
    Item(JOMA, "Thm. 5 (HBLT)", "co-occurrence is set by the depth of the lowest common ancestor", (),
         "a closed form of the generative model, checked by a test against its sampler (consistency)"),
    Item(JOMA, "Fig. 5(b)", "each layer learns strong associations first", (
        "joma-hier/query-layer-ordered", "joma-hier/lower-layer-ordered", "joma-hier/strong-before-weak")),
    Item(JOMA, "Fig. 5(c)", "an extra latent layer changes what the lower layer learns first", (
        "joma-hier/extra-latent-query-layer", "joma-hier/extra-latent-lower-layer")),
    Item(JOMA, "Figs. 6, 8", "attention entropy of trained models on WikiText drops, then bounces back", (
        "joma-wikitext/lowest-layer-drops", "joma-wikitext/lowest-layer-bounces-back")),
    Item(JOMA, "Table 1", "hidden neurons align with latents (0.94-1.00 at layer 0, 0.55-0.81 at layer 1)", (
        "joma-table1/lower-layer-aligns", "joma-table1/upper-layer-aligns", "joma-table1/lower-layer-aligns-better",
        "joma-table1/upper-layer-carries-higher-latents")),
    Item(JOMA, "Fig. 7", "stable rank of lower MLP layers over OPT/Pythia checkpoints", (),
         "not attempted: needs pretrained checkpoints (downloads)"),
)


def coverage(table: pd.DataFrame | None = None, items=ITEMS) -> pd.DataFrame:
    """One row per paper item: status and detail from the reproduction verdicts in ``table``
    (the verification table: columns experiment, claim, kind, verdict)."""
    verdicts: dict[str, str] = {}
    kinds: dict[str, str] = {}
    if table is not None and len(table):
        for r in table.itertuples(index=False):
            verdicts[f"{r.experiment}/{r.claim}"] = r.verdict
            kinds[f"{r.experiment}/{r.claim}"] = r.kind
    rows = []
    for it in items:
        rep = [c for c in it.claims if kinds.get(c) == "reproduction"]
        con = [c for c in it.claims if kinds.get(c) == "consistency"]
        missing = [c for c in it.claims if c not in kinds]
        vs = [verdicts[c] for c in rep]
        if not rep:
            status = "not attempted"
            if it.reason:
                why = it.reason
            elif con:
                why = "only consistency checks stand behind it: " + ", ".join(con)
            elif missing:
                why = "its claims have no verdict yet: " + ", ".join(missing)
            else:
                why = ""
            detail = why
        else:
            status = ("contradicted" if "FAIL" in vs else "reproduced" if all(v == "PASS" for v in vs)
                      else "inconclusive")
            detail = ", ".join(f"{vs.count(v)} {v}" for v in ("PASS", "FAIL", "INCONCLUSIVE", "STALE") if v in vs)
            if con:
                detail += f"; {len(con)} consistency check(s) beside"
        rows.append({"paper": it.paper, "item": it.item, "states": it.states, "status": status,
                     "detail": detail, "claims": ", ".join(rep) if rep else ", ".join(it.claims)})
    return pd.DataFrame(rows, columns=["paper", "item", "states", "status", "detail", "claims"])


def render(cov: pd.DataFrame) -> str:
    """Markdown: per paper, a count line and the table."""
    out = []
    for paper, g in cov.groupby("paper", sort=False):
        counts = ", ".join(f"{int((g.status == s).sum())} {s}" for s in STATUSES)
        out += [f"### {paper}", "", f"{len(g)} items: {counts}.", "",
                to_markdown(g[["item", "states", "status", "detail", "claims"]])]
    return "\n".join(out)


def summary(cov: pd.DataFrame) -> str:
    """A short per-paper count table for the README."""
    rows = [{"paper": p, "items": len(g), **{s: int((g.status == s).sum()) for s in STATUSES}}
            for p, g in cov.groupby("paper", sort=False)]
    return ("Coverage of the papers (theorems, lemmas with a numeric consequence, figures, tables; "
            "reproduction claims only; details in results/coverage.md):\n\n"
            + to_markdown(pd.DataFrame(rows)))
