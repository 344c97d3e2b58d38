"""Training-batch augmentation on the device: random crop with padding and horizontal flip.

Vectorized over the batch: the batch is padded once, then every example's crop window (and
its optional mirror) is gathered with advanced indexing, so there is no per-example loop.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

Augment = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


def random_crop_flip(
    x: torch.Tensor,
    generator: torch.Generator,
    padding: int = 4,
    flip_prob: float = 0.5,
    fill: Sequence[float] | None = None,
) -> torch.Tensor:
    """Per example: pad by `padding`, crop back to (H, W) at a uniform offset, mirror with flip_prob.

    x is (N, C, H, W). `fill` is the per-channel value of the padding (zeros when None).
    Random numbers come from `generator` (on any device) and are moved to x's device.
    """
    n, c, h, w = x.shape
    p = padding
    gdev = generator.device
    off_y = torch.randint(0, 2 * p + 1, (n,), generator=generator, device=gdev).to(x.device)
    off_x = torch.randint(0, 2 * p + 1, (n,), generator=generator, device=gdev).to(x.device)
    flip = (torch.rand(n, generator=generator, device=gdev) < flip_prob).to(x.device)

    padded = F.pad(x, (p, p, p, p))
    if fill is not None:  # paint the border with the per-channel fill value
        border = torch.ones(h + 2 * p, w + 2 * p, dtype=torch.bool, device=x.device)
        border[p : p + h, p : p + w] = False
        value = torch.as_tensor(fill, dtype=x.dtype, device=x.device).view(1, c, 1, 1)
        padded = torch.where(border, value, padded)

    rows = off_y[:, None] + torch.arange(h, device=x.device)  # (N, H)
    cols = off_x[:, None] + torch.arange(w, device=x.device)  # (N, W)
    cols = torch.where(flip[:, None], cols.flip(1), cols)  # mirrored crop = reversed columns
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    chan = torch.arange(c, device=x.device)[None, :, None, None]
    return padded[batch, chan, rows[:, None, :, None], cols[:, None, None, :]]


def make_augment(fill: Sequence[float] | None = None, padding: int = 4) -> Augment:
    """The augmentation a TaskData carries: random_crop_flip with the task's padding value."""
    fill = None if fill is None else [float(v) for v in fill]

    def augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return random_crop_flip(x, generator, padding=padding, fill=fill)

    return augment
