"""A dataset that needs no files: Gaussian inputs labelled by a random teacher network.

Everything is drawn from one torch generator seeded with data.synthetic.seed, in a fixed
order (teacher weights, training inputs, test inputs), so the data is a function of the config.
"""

from __future__ import annotations

import math

import torch

from .spec import RawSplits

# Inputs are standard normal, so the "dataset" normalization is the identity.
SYNTHETIC_MEAN = 0.0
SYNTHETIC_STD = 1.0


def expected_relu(w1: torch.Tensor, b1: torch.Tensor) -> torch.Tensor:
    """E[relu(x @ w1 + b1)] for x ~ N(0, I): each pre-activation is N(b, |w|^2)."""
    sigma = w1.norm(dim=0)
    t = b1 / sigma
    pdf = torch.exp(-0.5 * t**2) / math.sqrt(2 * math.pi)
    cdf = 0.5 * (1 + torch.erf(t / math.sqrt(2)))
    return sigma * pdf + b1 * cdf


def teacher_labels(x: torch.Tensor, w1, b1, w2) -> torch.Tensor:
    """argmax of the teacher MLP dim -> width -> classes with a ReLU.

    Hidden units are centred by their expected value, so no class wins merely because its
    output weights sum high: classes come out roughly balanced instead of one dominating.
    """
    hidden = torch.relu(x @ w1 + b1) - expected_relu(w1, b1)
    return (hidden @ w2).argmax(dim=1)


def read_synthetic(where=None, cfg=None) -> RawSplits:
    from ..config import SyntheticConfig

    s = cfg.synthetic if cfg is not None else SyntheticConfig()
    g = torch.Generator().manual_seed(s.seed)
    w1 = torch.randn(s.dim, s.teacher_width, generator=g) / math.sqrt(s.dim)
    b1 = torch.randn(s.teacher_width, generator=g) * 0.1
    w2 = torch.randn(s.teacher_width, s.classes, generator=g) / math.sqrt(s.teacher_width)
    x_train = torch.randn(s.n_train, s.dim, generator=g)
    x_test = torch.randn(s.n_test, s.dim, generator=g)
    return RawSplits(
        x_train,
        teacher_labels(x_train, w1, b1, w2),
        x_test,
        teacher_labels(x_test, w1, b1, w2),
        [str(c) for c in range(s.classes)],
        "generated",
    )


def find_synthetic(data_dir) -> tuple[None, str]:
    return None, "generated from data.synthetic (no files needed)"
