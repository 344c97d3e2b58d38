"""Output margins of a trained network, as per-example distributions.

All margins are computed in eval mode, without gradients, in batches, over the examples of each
split in their stored (fixed, unshuffled) order: the first `limit` of them when a limit is set.
The train split uses the training labels as stored, i.e. the *noisy* labels in a label-noise run
(the labels the network was fitted to); a correctly fitted flipped example has a positive margin.

Raw margin of example (x, y):

- binary task (one output f(x) of shape (batch,), y = ±1):  m(x, y) = y·f(x);
- classes (logits f(x) in R^K, y a class index):           m(x, y) = f_y(x) − max_{j≠y} f_j(x).

Normalized margins (``kind``), each a per-example array:

- ``raw``: m as above.
- ``output_std``: m / s, s = population standard deviation (divisor n, not n − 1) of the raw
  outputs over the same examples: of the n scores f(x) (binary) or of all n·K logits (classes).
  If s = 0 the margin is left undivided (study 1's SKS convention).
- ``norm_one``: the raw margin of the *norm-one network* (`norm_one_network`): a deep copy in
  which every weight layer ℓ (registration order) is scaled by c_ℓ = 1/‖W_ℓ‖_F, and its bias by
  the cumulative product Π_{k≤ℓ} c_k. For a chain of weight layers joined by positively
  homogeneous modules (ReLU, LeakyReLU, max/avg pooling, flatten) this is exactly
  f(x) / Π_ℓ ‖W_ℓ‖_F, biases included. Batch norm (in eval mode an affine map with fixed running
  statistics), GELU or tanh are left as they are and are not homogeneous, so for such networks
  norm_one is *not* the plain quotient and differs from ``frobenius``. (Study 1 set the weights'
  norms to one but left biases untouched, which is not a normalization for a net with biases.)
- ``spectral``: m / Π_ℓ ‖W_ℓ‖_2 (product of the weight matrices' spectral norms; convolutions
  as (out, in·kh·kw) matrices, an approximation of the convolution's operator norm).
- ``frobenius``: m / Π_ℓ ‖W_ℓ‖_F.
- ``spectral_complexity``: m / R_A with the spectral complexity of Bartlett, Foster & Telgarsky
  (2017) (`spectral_complexity`). BFT's normalized margin also divides by ‖X‖_F / n (X the n×d
  data matrix of the set); that factor is reported per split in `MarginResult.normalizers`
  (``input_frobenius_over_n``) rather than folded in, so the kind stays a property of the
  network alone; divide the ``spectral_complexity`` margins by it to get BFT's quantity.

Products and sums run over all weight layers (nn.Linear, nn.Conv2d); PaperWN layers use their
effective weight g·V/‖V‖_F, whose Frobenius norm is |g|. Biases enter only ``norm_one``. A
quotient whose denominator is 0 gives NaN.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.nn.utils import parametrize

from ..data import TaskData
from ..models.structure import weight_layers
from ..models.weightnorm import global_scale, is_unit_normalized, is_weight_normalized, wn_scale
from ._common import DEFAULT_BATCH_SIZE, SPLITS, batched_outputs, eval_mode, raw_margins, split_examples, weight_matrix

MARGIN_KINDS = ("raw", "output_std", "norm_one", "spectral", "frobenius", "spectral_complexity")
SUMMARY_COLUMNS = ["split", "kind", "n", "min", "q05", "q25", "median", "q75", "q95", "max", "mean", "std"]


# ----------------------------------------------------------------------------- normalizers


def output_scale(model: nn.Module) -> float:
    """|ρ| under Rho-WN (the global scale on the output, a factor of every norm product), else 1."""
    rho = global_scale(model)
    return 1.0 if rho is None else abs(float(rho.detach()))


@torch.no_grad()
def product_of_spectral_norms(model: nn.Module) -> float:
    """Π_ℓ ‖W_ℓ‖_2 over the weight layers (largest singular value of each weight matrix), times |ρ|
    under Rho-WN."""
    norms = (float(torch.linalg.matrix_norm(weight_matrix(m).double(), ord=2)) for _, m in weight_layers(model))
    return math.prod(norms) * output_scale(model)


@torch.no_grad()
def product_of_frobenius_norms(model: nn.Module) -> float:
    """Π_ℓ ‖W_ℓ‖_F over the weight layers, times |ρ| under Rho-WN."""
    return math.prod(float(weight_matrix(m).double().norm()) for _, m in weight_layers(model)) * output_scale(model)


def norm_21_of_transpose(a: torch.Tensor) -> float:
    """‖Aᵀ‖_{2,1} for A of shape (out, in): BFT's ‖B‖_{2,1} is the sum of the 2-norms of the
    *columns* of B, and the columns of Aᵀ are the rows of A, so this is Σ_j ‖A[j, :]‖_2, the sum
    over output units of the norms of their incoming weight vectors."""
    return float(torch.linalg.vector_norm(a.double(), dim=1).sum())


@torch.no_grad()
def spectral_complexity(model: nn.Module, reference: Mapping[str, torch.Tensor] | None = None) -> float:
    """Spectral complexity of Bartlett, Foster & Telgarsky (2017), with ReLU-Lipschitz ρ_ℓ = 1:

        R_A = (Π_ℓ ‖A_ℓ‖_σ) · (Σ_ℓ (‖A_ℓᵀ − M_ℓᵀ‖_{2,1} / ‖A_ℓ‖_σ)^{2/3})^{3/2}

    A_ℓ = the weight matrix of layer ℓ (out, in), or (out, in·kh·kw) for a conv (an
    approximation: BFT's A_ℓ is the linear operator itself); ‖·‖_σ = spectral norm;
    ‖Bᵀ‖_{2,1} = Σ_j ‖B[j, :]‖_2 (see `norm_21_of_transpose`). Reference matrices M_ℓ = 0 by
    default; pass `reference` = {layer name: weight at initialization} (e.g. from
    `weight_matrices(model)` taken before training) for M_ℓ = initial weights. Biases are not
    part of R_A. NaN if some ‖A_ℓ‖_σ = 0. Under Rho-WN |ρ| multiplies the product (ρ scales the
    output, i.e. the last layer; exact for M_ℓ = 0, whose ratios are scale-free)."""
    prod = output_scale(model)
    total = 0.0
    for name, layer in weight_layers(model):
        a = weight_matrix(layer).double()
        sigma = float(torch.linalg.matrix_norm(a, ord=2))
        m = None if reference is None else reference.get(name)
        if reference is not None and m is None:
            raise KeyError(f"reference weights have no entry for layer {name!r}")
        diff = a if m is None else a - m.detach().reshape(a.shape).to(a)
        if sigma == 0:
            return float("nan")
        prod *= sigma
        total += (norm_21_of_transpose(diff) / sigma) ** (2.0 / 3.0)
    return prod * total**1.5


def weight_matrices(model: nn.Module) -> dict[str, torch.Tensor]:
    """{layer name: detached copy of its effective weight matrix}: a reference for
    `spectral_complexity` (take it at initialization)."""
    return {name: weight_matrix(layer).clone() for name, layer in weight_layers(model)}


def input_frobenius_over_n(x: torch.Tensor) -> float:
    """‖X‖_F / n for the n examples in x, each flattened (BFT's data-scale factor)."""
    return float(x.detach().reshape(len(x), -1).double().norm()) / len(x)


@torch.no_grad()
def norm_one_network(model: nn.Module) -> nn.Module:
    """A deep copy in which every weight layer has ‖W_ℓ‖_F = 1 and biases follow homogeneously.

    Layers in registration order ℓ = 1..L; c_ℓ = 1/‖W_ℓ‖_F (c_ℓ = 1 when ‖W_ℓ‖_F = 0):
    W_ℓ ← c_ℓ W_ℓ (PaperWN: g_ℓ ← g_ℓ/|g_ℓ|, i.e. g_ℓ = 1 for positive g, since ‖W_ℓ‖_F = |g_ℓ|)
    and b_ℓ ← (Π_{k≤ℓ} c_k) b_ℓ. Under Rho-WN the layers already have norm 1 (c_ℓ = 1) and the
    global scale becomes ρ ← ρ/|ρ|, so the copy computes f(x) / |ρ|. For a chain of weight
    layers joined by positively homogeneous modules the copy computes f(x) / Π_ℓ ‖W_ℓ‖_F exactly;
    batch-norm and non-homogeneous activations are left untouched, so there it does not (see the
    module docstring). The
    cumulative bias rule also assumes the weight layers form a chain in registration order.
    The original model is not modified."""
    net = copy.deepcopy(model)
    cumulative = 1.0
    for name, layer in weight_layers(net):
        if is_weight_normalized(layer):
            g = wn_scale(layer)
            norm = abs(float(g))
            c = 1.0 / norm if norm > 0 else 1.0
            g.mul_(c)
        elif is_unit_normalized(layer):
            c = 1.0
        elif parametrize.is_parametrized(layer, "weight"):
            raise ValueError(f"layer {name!r}: cannot rescale a weight under a parametrization other than weight norm")
        else:
            norm = float(layer.weight.double().norm())
            c = 1.0 / norm if norm > 0 else 1.0
            layer.weight.mul_(c)
        cumulative *= c
        bias = getattr(layer, "bias", None)
        if bias is not None:
            bias.mul_(cumulative)
    rho = global_scale(net)
    if rho is not None and float(rho.detach()) != 0:
        rho.div_(abs(float(rho.detach())))
    return net


# ----------------------------------------------------------------------------- margins


@dataclass
class MarginResult:
    distributions: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)
    """(split, kind) -> per-example margins (float64), in the split's stored order."""
    normalizers: dict = field(default_factory=dict)
    """The denominators: prod_spectral_norm, prod_frobenius_norm, spectral_complexity (network
    scalars) and output_std, input_frobenius_over_n (dicts split -> value)."""


def _divide(m: np.ndarray, d: float) -> np.ndarray:
    if d == 0 or not math.isfinite(d):
        return np.full_like(m, np.nan)
    return m / d


def compute_margins(
    model: nn.Module,
    data: TaskData,
    splits: Sequence[str] = SPLITS,
    limit: int | None = None,
    reference: Mapping[str, torch.Tensor] | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> MarginResult:
    """Every kind of MARGIN_KINDS for every asked split that exists (module docstring).
    `reference`: M_ℓ of the spectral complexity (None: M_ℓ = 0). The model keeps its mode and
    parameters."""
    result = MarginResult()
    with eval_mode(model):
        normed = norm_one_network(model).eval()
        prod_spec = product_of_spectral_norms(model)
        prod_fro = product_of_frobenius_norms(model)
        r_a = spectral_complexity(model, reference)
        result.normalizers = {
            "prod_spectral_norm": prod_spec,
            "prod_frobenius_norm": prod_fro,
            "spectral_complexity": r_a,
            "output_std": {},
            "input_frobenius_over_n": {},
        }
        for split, x, y in split_examples(data, splits, limit):
            out = batched_outputs(model, x, batch_size)
            raw = raw_margins(out, y).double().cpu().numpy()
            std = float(out.double().std(correction=0))
            one = raw_margins(batched_outputs(normed, x, batch_size), y).double().cpu().numpy()
            result.normalizers["output_std"][split] = std
            result.normalizers["input_frobenius_over_n"][split] = input_frobenius_over_n(x)
            d = result.distributions
            d[(split, "raw")] = raw
            d[(split, "output_std")] = raw / std if std > 0 else raw.copy()
            d[(split, "norm_one")] = one
            d[(split, "spectral")] = _divide(raw, prod_spec)
            d[(split, "frobenius")] = _divide(raw, prod_fro)
            d[(split, "spectral_complexity")] = _divide(raw, r_a)
    return result


def margin_distributions(
    model: nn.Module,
    data: TaskData,
    splits: Sequence[str] = SPLITS,
    limit: int | None = None,
    reference: Mapping[str, torch.Tensor] | None = None,
) -> dict[tuple[str, str], np.ndarray]:
    """(split, kind) -> per-example margins; `compute_margins` without the normalizers."""
    return compute_margins(model, data, splits, limit, reference).distributions


def summarize(dists: Mapping[tuple[str, str], np.ndarray]) -> pd.DataFrame:
    """One row per (split, kind): n, min, q05, q25, median, q75, q95, max, mean, std.
    Quantiles by linear interpolation (numpy's default); std is the population std (ddof 0)."""
    rows = []
    for (split, kind), values in dists.items():
        v = np.asarray(values, dtype=np.float64)
        if v.size == 0:
            rows.append({"split": split, "kind": kind, "n": 0})
            continue
        q = np.quantile(v, [0.05, 0.25, 0.5, 0.75, 0.95])
        rows.append(
            {
                "split": split,
                "kind": kind,
                "n": int(v.size),
                "min": float(v.min()),
                "q05": float(q[0]),
                "q25": float(q[1]),
                "median": float(q[2]),
                "q75": float(q[3]),
                "q95": float(q[4]),
                "max": float(v.max()),
                "mean": float(v.mean()),
                "std": float(v.std()),
            }
        )
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
