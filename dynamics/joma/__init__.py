"""JoMA: joint dynamics of MLP and attention (Tian, Wang, Zhang, Chen, Du; ICLR 2024, arXiv 2310.00535).

model.py      the one-block model (attention -> residual -> MLP -> readout), its data, batched training
invariant.py  Theorem 1: the attention logits as a function of the MLP weights ("integrating out" attention)
theory.py     the MLP-only dynamics of Sec. 4 (Fig. 4) and turning-step analysis of entropy curves
hier.py       the hierarchical binary latent-tree generative model (Sec. 5) and a two-layer model on it
analysis.py   trajectories -> tidy DataFrames
"""
