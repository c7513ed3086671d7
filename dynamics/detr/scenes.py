"""Synthetic detection scenes: 1-6 axis-aligned boxes of a few classes on a small square canvas.

A scene is a padded batch: ``boxes`` (B, G, 4) cxcywh in canvas units [0, 1], ``labels`` (B, G)
class ids, ``valid`` (B, G) which slots hold an object (G = max objects per image).  Box edges lie on
the pixel grid, so a perfect detector can reach IoU 1 from the rendered image.

The image (B, n_classes + 1, S, S) has one channel per class that is 1 inside every box of that
class, and one outline channel (1 on each box's border pixels) that separates touching or
overlapping boxes of one class.  Boxes may overlap, as objects do in real images.
"""

from __future__ import annotations

import dataclasses

import torch

from ..config import field
from ..errors import UserError
from .boxes import cxcywh_to_xyxy


@dataclasses.dataclass(frozen=True)
class SceneSpec:
    canvas: int = field(32, "image side in pixels")
    n_classes: int = field(3, "object classes")
    min_objects: int = field(1, "fewest boxes per image")
    max_objects: int = field(6, "most boxes per image")
    min_size: float = field(0.12, "smallest box side, fraction of the canvas")
    max_size: float = field(0.4, "largest box side, fraction of the canvas (<= 1: boxes stay on the canvas)")

    def __post_init__(self) -> None:
        check_spec(self)

    @property
    def channels(self) -> int:
        return self.n_classes + 1


@dataclasses.dataclass
class Scenes:
    boxes: torch.Tensor  # (B, G, 4) cxcywh, canvas units; padding slots are 0
    labels: torch.Tensor  # (B, G) int64; padding slots are 0
    valid: torch.Tensor  # (B, G) bool

    def __len__(self) -> int:
        return self.boxes.shape[0]

    def to(self, device) -> Scenes:
        return Scenes(self.boxes.to(device), self.labels.to(device), self.valid.to(device))

    def subset(self, idx) -> Scenes:
        return Scenes(self.boxes[idx], self.labels[idx], self.valid[idx])


def check_spec(spec: SceneSpec) -> None:
    """UserError unless every box the spec can produce lies on the canvas and has at least a pixel."""
    if spec.canvas < 4:
        raise UserError(f"canvas must be at least 4 pixels, got {spec.canvas}")
    if spec.n_classes < 1:
        raise UserError(f"n_classes must be at least 1, got {spec.n_classes}")
    if not 1 <= spec.min_objects <= spec.max_objects:
        raise UserError(f"need 1 <= min_objects <= max_objects, got {spec.min_objects}, {spec.max_objects}")
    if not 0 < spec.min_size <= spec.max_size:
        raise UserError(f"need 0 < min_size <= max_size, got {spec.min_size}, {spec.max_size}")
    if spec.max_size > 1:
        raise UserError(f"max_size={spec.max_size:g} puts boxes outside the canvas (box sides must be <= 1)")
    if round(spec.max_size * spec.canvas) < max(1, round(spec.min_size * spec.canvas)):
        raise UserError(f"no whole-pixel box size between min_size={spec.min_size:g} and "
                        f"max_size={spec.max_size:g} on a {spec.canvas}-pixel canvas")


def check_boxes(scenes: Scenes) -> None:
    """UserError if a valid box leaves the canvas [0, 1]^2 or has no area (for user-given scenes)."""
    xyxy = cxcywh_to_xyxy(scenes.boxes)[scenes.valid]
    if xyxy.numel() == 0:
        return
    tol = 1e-6
    outside = (xyxy[:, :2] < -tol).any(-1) | (xyxy[:, 2:] > 1 + tol).any(-1)
    if outside.any():
        b = xyxy[outside][0].tolist()
        raise UserError(f"box (x0, y0, x1, y1) = ({', '.join(f'{v:.3g}' for v in b)}) lies outside the "
                        f"canvas [0, 1]^2 ({int(outside.sum())} such boxes)")
    empty = ((xyxy[:, 2:] - xyxy[:, :2]) <= 0).any(-1)
    if empty.any():
        raise UserError(f"{int(empty.sum())} boxes have zero width or height")


def make_scenes(boxes, labels, spec: SceneSpec) -> Scenes:
    """A validated :class:`Scenes` from a list (per image) of cxcywh box lists and label lists."""
    B, G = len(boxes), max([len(b) for b in boxes] + [1])
    out = Scenes(torch.zeros(B, G, 4, dtype=torch.float64), torch.zeros(B, G, dtype=torch.long),
                 torch.zeros(B, G, dtype=torch.bool))
    for i, (bs, ls) in enumerate(zip(boxes, labels)):
        if len(bs) != len(ls):
            raise UserError(f"image {i}: {len(bs)} boxes but {len(ls)} labels")
        if len(bs):
            out.boxes[i, :len(bs)] = torch.as_tensor(bs, dtype=torch.float64).reshape(-1, 4)
            out.labels[i, :len(bs)] = torch.as_tensor(ls, dtype=torch.long)
            out.valid[i, :len(bs)] = True
    if ((out.labels < 0) | (out.labels >= spec.n_classes))[out.valid].any():
        raise UserError(f"labels must lie in [0, {spec.n_classes})")
    check_boxes(out)
    out.boxes = out.boxes.float()
    return out


def sample(n: int, spec: SceneSpec, gen: torch.Generator) -> Scenes:
    """n random scenes, all drawn at once.  Sides are whole pixels in [min_size, max_size] * S, the
    object count is uniform on [min_objects, max_objects] and the class uniform on n_classes."""
    S, G = spec.canvas, spec.max_objects
    lo, hi = max(1, round(spec.min_size * S)), round(spec.max_size * S)
    count = torch.randint(spec.min_objects, G + 1, (n,), generator=gen)
    valid = torch.arange(G)[None, :] < count[:, None]
    wh = torch.randint(lo, hi + 1, (n, G, 2), generator=gen)
    # the lower-left corner: uniform over the positions that keep the box on the canvas
    x0y0 = (torch.rand(n, G, 2, generator=gen) * (S - wh + 1)).floor()
    xyxy = torch.cat([x0y0, x0y0 + wh], -1).float() / S
    cxcywh = torch.stack([(xyxy[..., 0] + xyxy[..., 2]) / 2, (xyxy[..., 1] + xyxy[..., 3]) / 2,
                          xyxy[..., 2] - xyxy[..., 0], xyxy[..., 3] - xyxy[..., 1]], -1)
    labels = torch.randint(0, spec.n_classes, (n, G), generator=gen)
    return Scenes(cxcywh * valid[..., None], labels * valid, valid)


def render(scenes: Scenes, spec: SceneSpec) -> torch.Tensor:
    """(B, n_classes + 1, S, S) float image: class-interior channels and one outline channel."""
    S = spec.canvas
    xyxy = cxcywh_to_xyxy(scenes.boxes) * S  # pixel units
    centre = torch.arange(S, dtype=xyxy.dtype, device=xyxy.device) + 0.5
    inx = (centre >= xyxy[..., 0, None]) & (centre < xyxy[..., 2, None])  # (B, G, S) along x
    iny = (centre >= xyxy[..., 1, None]) & (centre < xyxy[..., 3, None])
    inside = (iny[..., :, None] & inx[..., None, :]) & scenes.valid[..., None, None]  # (B, G, S_y, S_x)
    shrink = torch.tensor([1.0, 1.0, -1.0, -1.0], dtype=xyxy.dtype, device=xyxy.device)
    inner = xyxy + shrink
    ix = (centre >= inner[..., 0, None]) & (centre < inner[..., 2, None])
    iy = (centre >= inner[..., 1, None]) & (centre < inner[..., 3, None])
    outline = inside & ~(iy[..., :, None] & ix[..., None, :])
    onehot = torch.nn.functional.one_hot(scenes.labels, spec.n_classes).to(xyxy.dtype)  # (B, G, C)
    classes = torch.einsum("bgc,bgyx->bcyx", onehot, inside.to(xyxy.dtype)).clamp(max=1)
    return torch.cat([classes, outline.any(1, keepdim=True).to(xyxy.dtype)], 1)
