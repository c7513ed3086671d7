"""R replicas' parameters in one flat buffer ``data`` of shape (R, P), with named views (R, *shape).

Every named parameter is a leaf tensor that is a view into ``data`` (``data[:, a:b].view(R, *shape)``)
and whose ``.grad`` is the same view into ``grad`` (R, P).  Autograd accumulates each parameter's
gradient in place into that view, so after a backward pass the whole gradient of replica r is the row
``grad[r]``: optimisers, per-replica clipping and divergence checks are a handful of operations on two
(R, P) tensors, whatever the number of parameters.  Replica r's parameters depend only on replica r's
seed (a ``numpy.random.SeedSequence``), so a replica initialised in a batch equals the same replica
initialised alone.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import warnings
from collections.abc import Callable, Iterable
from typing import Literal

import numpy as np
import torch

Init = Literal["normal", "trunc_normal", "uniform", "zeros", "ones", "const"]


@dataclasses.dataclass(frozen=True)
class ParamSpec:
    """One parameter per replica: ``shape`` excludes the replica axis.

    init: normal N(0, std^2); trunc_normal the same clipped at +-2 std (ViT/DeiT); uniform U(-std, std);
    zeros / ones; const fills ``std``.  decay: AdamW weight decay applies (weight matrices, embeddings).
    """

    shape: tuple[int, ...]
    init: Init = "zeros"
    std: float = 0.0
    decay: bool = False

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


def replica_seeds(root: int | np.random.SeedSequence, replicas: int) -> list[np.random.SeedSequence]:
    """Independent per-replica seeds spawned from one root (``SeedSequence.spawn``).

    Spawning is deterministic from the root, so ``replica_seeds(s, R)[r]`` is the same for every R > r:
    replica r of a batch can be re-run alone with ``[replica_seeds(s, R)[r]]``."""
    ss = root if isinstance(root, np.random.SeedSequence) else np.random.SeedSequence(root)
    return [np.random.SeedSequence(ss.entropy, spawn_key=ss.spawn_key + (r,)) for r in range(replicas)]


def seed_lr_grid(seeds: int, lrs) -> tuple[np.ndarray, np.ndarray]:
    """The replicas of a learning-rate bracket: replica r trains seed r // len(lrs) at rate lrs[r % len(lrs)],
    so the rates of one seed sit side by side.  Returns (seed_of, lr_of), each (seeds * len(lrs),)."""
    return np.repeat(np.arange(seeds), len(lrs)), np.tile(np.asarray(lrs, float), seeds)


def child(ss: np.random.SeedSequence, name: str) -> np.random.SeedSequence:
    """A named child stream (init of one parameter, data order, dropout) of a replica's seed."""
    tag = int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "little")
    return np.random.SeedSequence(ss.entropy, spawn_key=ss.spawn_key + (tag,))


def generator(ss: np.random.SeedSequence, name: str, device: str | torch.device = "cpu") -> torch.Generator:
    state = child(ss, name).generate_state(2, dtype=np.uint64)
    return torch.Generator(device=device).manual_seed(int(state[0] >> np.uint64(1)))


def _draw(spec: ParamSpec, g: torch.Generator) -> torch.Tensor:
    if spec.init == "normal":
        return torch.randn(spec.shape, generator=g, dtype=torch.float64) * spec.std
    if spec.init == "trunc_normal":
        return (torch.randn(spec.shape, generator=g, dtype=torch.float64) * spec.std).clamp(-2 * spec.std, 2 * spec.std)
    if spec.init == "uniform":
        return (torch.rand(spec.shape, generator=g, dtype=torch.float64) * 2 - 1) * spec.std
    if spec.init == "ones":
        return torch.ones(spec.shape, dtype=torch.float64)
    if spec.init == "const":
        return torch.full(spec.shape, float(spec.std), dtype=torch.float64)
    return torch.zeros(spec.shape, dtype=torch.float64)


class ReplicaParams:
    """Named (R, *shape) leaf views into one (R, P) buffer, and their gradients in another.

    ``data``, ``grad``: (R, P); ``views[name]``: (R, *shape).  Parameters with weight decay occupy the
    leading columns ``[:, :P_decay]``.
    Build with :meth:`init` (per-replica seeds) or :meth:`from_tensors` (existing stacked tensors).
    """

    def __init__(self, shapes: dict[str, tuple[int, ...]], decay: dict[str, bool], replicas: int,
                 dtype=torch.float32, device: str | torch.device = "cpu"):
        self.names = list(shapes)
        self.shapes = dict(shapes)
        self.decay = {n: bool(decay.get(n, False)) for n in self.names}
        # decayed parameters first: weight decay then scales one contiguous block data[:, :P_decay]
        layout = sorted(self.names, key=lambda n: not decay.get(n, False))
        sizes = [math.prod(shapes[n]) for n in layout]
        self.offsets = dict(zip(layout, np.cumsum([0] + sizes[:-1]).tolist()))
        self.R, self.P = replicas, int(sum(sizes))
        self.P_decay = int(sum(math.prod(shapes[n]) for n in layout if decay.get(n, False)))
        kw = {"dtype": dtype, "device": device}
        self.data = torch.zeros(replicas, self.P, **kw)
        self.grad = torch.zeros(replicas, self.P, **kw)
        self.views: dict[str, torch.Tensor] = {}
        for n in self.names:
            a, b = self.offsets[n], self.offsets[n] + math.prod(shapes[n])
            v = self.data[:, a:b].view(replicas, *shapes[n])
            v.requires_grad_(True)
            v.grad = self.grad[:, a:b].view(replicas, *shapes[n])
            self.views[n] = v

    @classmethod
    def init(cls, specs: dict[str, ParamSpec], seeds: list[np.random.SeedSequence], dtype=torch.float32,
             device: str | torch.device = "cpu") -> ReplicaParams:
        """Draw replica r's parameter ``name`` from its own generator (seeds[r], name), in float64."""
        out = cls({n: s.shape for n, s in specs.items()}, {n: s.decay for n, s in specs.items()}, len(seeds),
                  dtype, device)
        with torch.no_grad():
            for n, s in specs.items():
                rows = torch.stack([_draw(s, generator(ss, n)) for ss in seeds])
                out.views[n].copy_(rows)
        return out

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor], decayed: Callable[[str, torch.Tensor], bool]) -> ReplicaParams:
        """Copy stacked tensors (R, *shape) (all on one device and dtype) into a new flat buffer."""
        first = next(iter(tensors.values()))
        out = cls({n: tuple(t.shape[1:]) for n, t in tensors.items()},
                  {n: bool(decayed(n, t)) for n, t in tensors.items()}, first.shape[0], first.dtype, first.device)
        with torch.no_grad():
            for n, t in tensors.items():
                out.views[n].copy_(t)
        return out

    @classmethod
    def adopt(cls, module: torch.nn.Module, decayed: Callable[[str, torch.Tensor], bool]) -> ReplicaParams:
        """Move a module's replica-stacked parameters (R, ...) into a flat buffer, in place: each
        ``nn.Parameter`` of the module is replaced by one aliasing its view, so the module's own
        forward trains (and evaluates) the flat buffer."""
        out = cls.from_tensors({n: p.detach() for n, p in module.named_parameters()}, decayed)
        for n in out.names:
            owner, _, attr = n.rpartition(".")
            par = torch.nn.Parameter(out.views[n].detach())  # shares the buffer's storage
            par.grad = out.views[n].grad
            setattr(module.get_submodule(owner) if owner else module, attr, par)
            out.views[n] = par
        return out

    def __getitem__(self, name: str) -> torch.Tensor:
        return self.views[name]

    def __contains__(self, name: str) -> bool:
        return name in self.views

    def items(self) -> Iterable[tuple[str, torch.Tensor]]:
        return self.views.items()

    def zero_grad(self) -> None:
        self.grad.zero_()

    def select(self, rows: torch.Tensor) -> ReplicaParams:
        """A new buffer holding the replicas ``rows`` (indices into this one, in that order), with the same
        layout; gradients start at zero.  Replicas share no entry, so a replica trains in the subset
        exactly as it would have in the whole."""
        out = type(self)(self.shapes, self.decay, len(rows), self.data.dtype, self.data.device)
        with torch.no_grad():
            out.data.copy_(self.data[rows])
        return out

    def replica(self, r: int) -> dict[str, torch.Tensor]:
        """Detached copies of replica r's parameters, without the replica axis."""
        return {n: v.detach()[r].clone() for n, v in self.views.items()}


def backward(loss: torch.Tensor) -> None:
    """``loss.backward()`` into the flat gradient buffer.

    The parameter views are strided (row stride P), which autograd reports as not obeying its
    gradient-layout contract; the in-place accumulation it then does is exactly what we want."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="grad and param do not obey the gradient layout contract")
        loss.backward()
