"""Penalties on derivatives of the network: the loss-gradient norm and a Jacobian nuclear-norm bound.

``gradient_norm`` (Zhao, Zhang & Hu, "Penalizing Gradient Norm for Efficiently Improving
Generalization in Deep Learning", ICML 2022):

    R(theta) = ||g||_2   (``squared``: ||g||_2^2),   g = d L_data / d theta_S

where theta_S are the parameters selected by ``roles`` (default: weights) and L_data is the data
loss of the current batch. R depends on *every* parameter (through the loss), so its gradient
reaches all trainable parameters, not only theta_S.

- ``method: exact``: double backprop, g = autograd.grad(L, theta_S, create_graph=True). (Handing
  the detached g to the trainer as the data gradient saves nothing here: the trainer's one
  backward traverses the batch's graph once for the data loss and the double backprop together.)
- ``method: finite_difference``: the paper's first-order scheme. Its update uses
  (1 - alpha) grad L(theta) + alpha grad L(theta + r g/||g||) with alpha = lam / r, i.e.
  grad L + lam * h with

      h = [grad L(theta + r u) - grad L(theta)] / r,   u = g / ||g||  (g detached, theta_S moved)

  h ~ H u = d||g||/dtheta (H = Hessian of L, rows over all trainable parameters). For
  ``squared``, h is multiplied by 2||g|| (d||g||^2/dtheta = 2 H g). The penalty returns a scalar
  whose *value* is the true ||g|| (or ||g||^2, detached) and whose *gradient* is h: value.detach()
  + <h, theta> - <h, theta>.detach(). It costs one extra backward of the batch's graph (for g, all
  trainable parameters) and one forward + backward at the perturbed parameters; the data gradient
  of that extra backward is handed to the trainer (``StepContext.data_grads``), which then skips
  the data loss's own backward, so a step costs two backward passes as in the paper. The extra forward
  runs on copies of the buffers, so BatchNorm running statistics are not updated twice; dropout
  draws a fresh mask there (then h also carries the mask noise).

``jacobian_nuclear`` (Scarvelis & Solomon, "Nuclear Norm Regularization for Deep Learning",
NeurIPS 2024). For a split f = g o h of the network,

    ||J_f(x)||_* <= 1/2 (||J_g(h(x))||_F^2 + ||J_h(x)||_F^2)

and R = mean over the batch of the right-hand side. h = the first ``split`` top-level children
of the model, g = the rest. The model must be an nn.Sequential (reglab's Network is one) or have
a ``net`` attribute that is one.

- ``method: estimate`` (default): ||J_k(z)||_F^2 ~ (1/sigma^2) mean_{s=1..S} ||k(z + e_s) - k(z)||^2,
  e_s ~ N(0, sigma^2 I), S = ``samples``, no Jacobian needed (exact in expectation for a linear
  k; bias O(sigma^2) otherwise). z = h(x) is not detached for the g term, so the penalty also
  acts on h through the point where J_g is evaluated, as the exact bound does. The clean z and
  g(z) are the training step's own forward (kept by forward hooks on the split point and the
  network, used only when that forward was the latest one); only the noisy inputs run again.
- ``method: exact``: per-example Jacobians with torch.func (vmap of jacrev), for tests and small
  models; it needs per-example layers (no BatchNorm in training mode).

All extra forwards run on copies of the model's buffers (running statistics are not updated).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Literal

import torch
from pydantic import Field
from torch import nn
from torch.func import functional_call, jacrev, vmap

from ..errors import ConfigError
from ..models.structure import params_by_role
from .base import Options, Regularizer, StepContext
from .registry import REGULARIZERS

# ----------------------------------------------------------------------------------------------
# plain functions (the math)
# ----------------------------------------------------------------------------------------------


def squared_norm(tensors: list[torch.Tensor]) -> torch.Tensor:
    """sum_i ||t_i||^2 over a non-empty list."""
    return torch.stack([t.pow(2).sum() for t in tensors]).sum()


def safe_sqrt(x: torch.Tensor) -> torch.Tensor:
    """sqrt(x) for x >= 0 with value 0 and gradient 0 (not NaN) at x == 0."""
    tiny = torch.finfo(x.dtype).tiny
    return torch.where(x > 0, x.clamp_min(tiny).sqrt(), torch.zeros_like(x))


def loss_gradients(loss: torch.Tensor, params: list[torch.Tensor], create_graph: bool) -> list[torch.Tensor]:
    """d loss / d p for each p (zeros for parameters the loss does not use). The loss graph is
    always retained: the trainer backpropagates the data loss afterwards."""
    grads = torch.autograd.grad(loss, params, create_graph=create_graph, retain_graph=True, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for g, p in zip(grads, params)]


def forward_with_buffer_copies(module: nn.Module, *args, overrides: dict[str, torch.Tensor] | None = None):
    """module(*args) with the tensors in `overrides` in place of the named parameters, and every
    buffer replaced by a clone, so in-place buffer updates (BatchNorm running stats) are discarded."""
    state = {name: b.clone() for name, b in module.named_buffers()}
    if overrides:
        state.update(overrides)
    return functional_call(module, state, args)


def gradient_norm_exact(loss: torch.Tensor, params: list[torch.Tensor], squared: bool = False) -> torch.Tensor:
    """||dL/dp||_2 over `params` (||.||^2 with `squared`), differentiable by double backprop."""
    norm_sq = squared_norm(loss_gradients(loss, params, create_graph=True))
    return norm_sq if squared else safe_sqrt(norm_sq)


def gradient_norm_finite_difference(
    model: nn.Module,
    ctx: StepContext,
    selected: list[tuple[str, torch.Tensor]],
    r: float,
    squared: bool = False,
) -> torch.Tensor:
    """Zhao et al.'s first-order scheme as a penalty (see the module docstring): value ||g|| (or
    ||g||^2), gradient h = [grad L(theta + r g/||g||) - grad L(theta)] / r over all trainable
    parameters (x 2||g|| with `squared`); only the selected parameters are moved."""
    if ctx.loss_fn is None:
        raise ValueError("gradient_norm with method finite_difference needs ctx.loss_fn to re-run the model")
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    params = [p for n, p in model.named_parameters() if p.requires_grad]
    index = {n: i for i, n in enumerate(names)}
    raw = torch.autograd.grad(ctx.data_loss, params, retain_graph=True, allow_unused=True)
    # the data gradient is computed here anyway: the trainer adds it instead of a second backward
    ctx.data_grads = [(p, g) for p, g in zip(params, raw) if g is not None]
    grads = [torch.zeros_like(p) if g is None else g for g, p in zip(raw, params)]
    g_sel = [grads[index[n]] for n, _ in selected]
    gnorm = squared_norm(g_sel).sqrt()
    scale = r / gnorm.clamp_min(torch.finfo(gnorm.dtype).tiny)  # g == 0 -> no move, h == 0
    moved = {n: (p.detach() + scale * grads[index[n]]).requires_grad_(False) for n, p in selected}
    leaves = {n: (moved[n] if n in moved else p.detach()).requires_grad_(True) for n, p in zip(names, params)}
    out = forward_with_buffer_copies(model, ctx.x, overrides=leaves)
    grads_moved = torch.autograd.grad(ctx.loss_fn(out, ctx.y), list(leaves.values()), allow_unused=True)
    h = [torch.zeros_like(g) if gm is None else (gm - g) / r for gm, g in zip(grads_moved, grads)]
    if squared:
        h = [2.0 * gnorm * hi for hi in h]
    value = gnorm.pow(2) if squared else gnorm
    surrogate = torch.stack([(hi.detach() * p).sum() for hi, p in zip(h, params)]).sum()
    return value.detach() + surrogate - surrogate.detach()


def model_layers(model: nn.Module) -> nn.Sequential:
    """The nn.Sequential the network is: the model itself, or its ``net`` attribute."""
    if isinstance(model, nn.Sequential):
        return model
    net = getattr(model, "net", None)
    if isinstance(net, nn.Sequential):
        return net
    raise ConfigError(
        "split",
        f"jacobian_nuclear splits the model's top-level layers, so the model must be an nn.Sequential "
        f"or have a .net nn.Sequential; got {type(model).__name__}",
    )


def split_model(model: nn.Module, split: int) -> tuple[nn.Sequential, nn.Sequential]:
    """(h, g): plain nn.Sequentials of the first `split` top-level children and of the rest
    (sharing the model's modules), so that model(x) == g(h(x))."""
    layers = list(model_layers(model)._modules.items())
    if not 1 <= split < len(layers):
        raise ConfigError(
            "split", f"must leave at least one layer on each side: 1 <= split < {len(layers)}, got {split}"
        )
    return nn.Sequential(OrderedDict(layers[:split])), nn.Sequential(OrderedDict(layers[split:]))


def frobenius_sq_exact(module: nn.Module, z: torch.Tensor) -> torch.Tensor:
    """||J_k(z_b)||_F^2 for each example b of the batch z (shape (B,)), differentiable in the
    module's parameters and in z; per-example Jacobians via vmap(jacrev)."""

    def single(zb: torch.Tensor) -> torch.Tensor:
        return module(zb.unsqueeze(0)).squeeze(0)

    jac = vmap(jacrev(single))(z)
    return jac.pow(2).reshape(z.shape[0], -1).sum(dim=1)


def frobenius_sq_estimate(
    module: nn.Module, z: torch.Tensor, kz: torch.Tensor, sigma: float, samples: int
) -> torch.Tensor:
    """(1/sigma^2) mean_s ||k(z_b + e_s) - k(z_b)||^2 per example b (shape (B,)), e_s ~ N(0, sigma^2 I);
    `kz` = k(z). All samples go through one batched forward of size samples * B."""
    batch = z.shape[0]
    noisy = z.unsqueeze(0) + sigma * torch.randn((samples, *z.shape), dtype=z.dtype, device=z.device)
    out = forward_with_buffer_copies(module, noisy.reshape(samples * batch, *z.shape[1:]))
    diff = out.reshape(samples, *kz.shape) - kz.unsqueeze(0)
    return diff.pow(2).reshape(samples, batch, -1).sum(dim=2).mean(dim=0) / sigma**2


def jacobian_nuclear_bound(
    h: nn.Module,
    g: nn.Module,
    x: torch.Tensor,
    method: str = "estimate",
    sigma: float = 0.01,
    samples: int = 1,
    clean: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(R, mean_b ||J_h(x_b)||_F^2, mean_b ||J_g(h(x_b))||_F^2) with
    R = mean_b 1/2 (||J_g(h(x_b))||_F^2 + ||J_h(x_b)||_F^2). `clean` = (h(x), g(h(x))) from a
    forward already run (with graph), else they are computed here."""
    z = clean[0] if clean is not None else forward_with_buffer_copies(h, x)
    if method == "exact":
        fh, fg = frobenius_sq_exact(h, x), frobenius_sq_exact(g, z)
    elif method == "estimate":
        gz = clean[1] if clean is not None else forward_with_buffer_copies(g, z)
        fh = frobenius_sq_estimate(h, x, z, sigma, samples)
        fg = frobenius_sq_estimate(g, z, gz, sigma, samples)
    else:
        raise ValueError(f"method must be estimate or exact, got {method!r}")
    return 0.5 * (fg + fh).mean(), fh.mean(), fg.mean()


# ----------------------------------------------------------------------------------------------
# regularizers (thin wrappers)
# ----------------------------------------------------------------------------------------------


def _selected(model: nn.Module, roles: tuple[str, ...], name: str) -> list[tuple[str, torch.Tensor]]:
    """(name, parameter) of the trainable parameters selected by role; an empty selection is a
    ConfigError naming ``roles``."""
    sel: list[tuple[str, torch.Tensor]] = [(n, p) for n, p in params_by_role(model, roles) if p.requires_grad]
    if not sel:
        raise ConfigError(
            "roles", f"{name} selects no trainable parameter with roles {list(roles)}", ["weight", "bias", "norm"]
        )
    return sel


class GradientNormOptions(Options):
    method: Literal["exact", "finite_difference"] = "exact"
    """exact: double backprop; finite_difference: Zhao et al.'s first-order scheme."""
    squared: bool = False
    """R = ||grad L||^2 instead of ||grad L||."""
    r: float = Field(0.01, gt=0.0, allow_inf_nan=False)
    """Step length of the finite-difference perturbation theta + r g/||g||."""


@REGULARIZERS.register("gradient_norm")
class GradientNorm(Regularizer):
    """R = ||d L_data / d theta_S||_2 (``squared``: its square); theta_S = parameters selected by
    ``roles`` (default weights). See the module docstring for both methods. ``report`` gives the
    value of the last training step as ``grad_norm`` (always the unsquared norm)."""

    not_vectorized_why = "its penalty differentiates the loss with torch.autograd.grad inside the step"

    uses_batch = True
    Options = GradientNormOptions
    options: GradientNormOptions

    def __init__(self, options: GradientNormOptions, roles=("weight",)):
        super().__init__(options, roles)
        self._last: torch.Tensor | None = None

    def setup(self, model: nn.Module) -> None:
        _selected(model, self.roles, self.name)

    def penalty(self, model: nn.Module, ctx: StepContext | None) -> torch.Tensor:
        ctx = self.require_context(ctx)
        sel = _selected(model, self.roles, self.name)
        o = self.options
        if o.method == "exact":
            value = gradient_norm_exact(ctx.data_loss, [p for _, p in sel], o.squared)
        else:
            value = gradient_norm_finite_difference(model, ctx, sel, o.r, o.squared)
        norm = value.detach().sqrt() if o.squared else value.detach()
        self._last = norm
        ctx.extra["grad_norm"] = norm
        return value

    @torch.no_grad()
    def report(self, model: nn.Module) -> dict[str, float]:
        return {} if self._last is None else {"grad_norm": float(self._last)}


class JacobianNuclearOptions(Options):
    split: int = Field(ge=1)
    """h = the first `split` top-level layers of the model, g = the rest."""
    sigma: float = Field(0.01, gt=0.0, allow_inf_nan=False)
    """Noise scale of the estimate."""
    samples: int = Field(1, ge=1)
    """Noise draws per example for the estimate."""
    method: Literal["estimate", "exact"] = "estimate"


@REGULARIZERS.register("jacobian_nuclear")
class JacobianNuclear(Regularizer):
    """R = mean_b 1/2 (||J_g(h(x_b))||_F^2 + ||J_h(x_b)||_F^2), an upper bound on the batch mean of
    ||J_f(x_b)||_* (Scarvelis & Solomon 2024); see the module docstring. It is a function-space
    penalty acting on every parameter, so ``roles`` must stay at its default. ``report`` gives the
    two Frobenius terms of the last training step (jac_h_frob_sq, jac_g_frob_sq)."""

    not_vectorized_why = "its penalty draws random perturbations (or per-example Jacobians) inside the step"

    uses_batch = True
    Options = JacobianNuclearOptions
    options: JacobianNuclearOptions

    def __init__(self, options: JacobianNuclearOptions, roles=("weight",)):
        super().__init__(options, roles)
        if self.roles != ("weight",):
            raise ConfigError(
                "roles",
                "jacobian_nuclear penalizes the network's Jacobian and does not select parameters by role; "
                f"got {list(self.roles)}",
                ["[weight]"],
            )
        self._parts: tuple[nn.Module, nn.Sequential, nn.Sequential] | None = None
        self._last: tuple[torch.Tensor, torch.Tensor] | None = None
        self._hooks: list = []
        self._boundary: torch.Tensor | None = None  # h's output in the latest forward
        self._forward: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None  # (x, h(x), g(h(x)))

    def setup(self, model: nn.Module) -> None:
        self._parts = (model, *split_model(model, self.options.split))
        for handle in self._hooks:
            handle.remove()
        # The training step's own forward already computes z = h(x) and g(z) = the model output:
        # keep them (with graph) so the estimate does not run h and g on the clean input again.
        layers = model_layers(model)
        boundary = list(layers._modules.values())[self.options.split - 1]
        self._hooks = [
            boundary.register_forward_hook(self._keep_boundary),
            layers.register_forward_hook(self._keep_forward),
        ]

    def _keep_boundary(self, module, inputs, output) -> None:
        self._boundary = output if torch.is_grad_enabled() else None

    def _keep_forward(self, module, inputs, output) -> None:
        boundary = self._boundary
        self._forward = (inputs[0], boundary, output) if torch.is_grad_enabled() and boundary is not None else None

    def _clean_pass(self, ctx: StepContext) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(h(x), g(h(x))) of the step's own forward, if the latest forward was that one: the same
        input and output tensors (any other forward, e.g. another penalty's at moved weights,
        leaves a different output and the clean pass is recomputed)."""
        kept, self._forward = self._forward, None
        if kept is None or kept[0] is not ctx.x or kept[2] is not ctx.outputs:
            return None
        return kept[1], kept[2]

    def _split(self, model: nn.Module) -> tuple[nn.Sequential, nn.Sequential]:
        if self._parts is None or self._parts[0] is not model:
            self.setup(model)
        assert self._parts is not None  # set by setup
        return self._parts[1], self._parts[2]

    def penalty(self, model: nn.Module, ctx: StepContext | None) -> torch.Tensor:
        ctx = self.require_context(ctx)
        h, g = self._split(model)
        o = self.options
        clean = self._clean_pass(ctx) if o.method == "estimate" else None
        value, fh, fg = jacobian_nuclear_bound(h, g, ctx.x, o.method, o.sigma, o.samples, clean)
        self._last = (fh.detach(), fg.detach())
        return value

    @torch.no_grad()
    def report(self, model: nn.Module) -> dict[str, float]:
        if self._last is None:
            return {}
        return {"jac_h_frob_sq": float(self._last[0]), "jac_g_frob_sq": float(self._last[1])}
