"""Functional SGD (momentum, Nesterov, coupled weight decay), Adam and AdamW on stacked
parameters ([M, ...], one slice per model) with a learning rate per model.

The update is the single-tensor code of torch.optim (what torch uses on CPU), written on the
stacked tensors. When every model has the same learning rate the Python scalar is used with the
same calls as torch (p.add_(g, alpha=-lr), p.addcdiv_(m, d, value=-step_size)); otherwise the lr
is a [M, 1, ...] tensor (p.addcmul_ / p.addcdiv_ of a scaled numerator), which rounds slightly
differently (about 1 ulp per step).

The state converts to and from a real torch optimizer of each model (`export_to`, `import_from`),
so a run's checkpoint holds exactly what torch.optim would have saved and can be resumed by the
one-by-one trainer.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..config import OptimConfig


class StackedOptimizer:
    def __init__(self, cfg: OptimConfig, params: list[Tensor]):
        self.cfg = cfg
        self.params = params
        self.step_count = 0
        """Adam: optimizer steps taken (torch keeps it per parameter; it is the same for all)."""
        self.momentum: list[Tensor | None] = [None] * len(params)
        self.exp_avg: list[Tensor | None] = [None] * len(params)
        self.exp_avg_sq: list[Tensor | None] = [None] * len(params)

    # ------------------------------------------------------------------ the update
    @torch.no_grad()
    def step(self, grads: list[Tensor], lrs: list[float]) -> None:
        same = all(lr == lrs[0] for lr in lrs)
        if self.cfg.name == "sgd":
            self._sgd(grads, lrs, same)
        else:
            self._adam(grads, lrs, same, decoupled=self.cfg.name == "adamw")

    def _lr_tensor(self, lrs: list[float], like: Tensor) -> Tensor:
        return torch.tensor(lrs, dtype=like.dtype, device=like.device).reshape(-1, *([1] * (like.ndim - 1)))

    def _sgd(self, grads, lrs, same):
        c = self.cfg
        for i, (p, g) in enumerate(zip(self.params, grads)):
            if c.weight_decay != 0:
                g = g.add(p, alpha=c.weight_decay)
            if c.momentum != 0:
                buf = self.momentum[i]
                if buf is None:
                    buf = g.detach().clone()
                    self.momentum[i] = buf
                else:
                    buf.mul_(c.momentum).add_(g, alpha=1.0)  # dampening 0
                g = g.add(buf, alpha=c.momentum) if c.nesterov else buf
            if same:
                p.add_(g, alpha=-lrs[0])
            else:
                p.addcmul_(g, self._lr_tensor(lrs, p), value=-1)

    def _adam(self, grads, lrs, same, decoupled):
        c = self.cfg
        beta1, beta2 = c.betas
        eps = 1e-8
        self.step_count += 1
        step = float(self.step_count)
        for i, (p, g) in enumerate(zip(self.params, grads)):
            if self.exp_avg[i] is None:
                self.exp_avg[i] = torch.zeros_like(p, memory_format=torch.preserve_format)
                self.exp_avg_sq[i] = torch.zeros_like(p, memory_format=torch.preserve_format)
            exp_avg, exp_avg_sq = self.exp_avg[i], self.exp_avg_sq[i]
            assert exp_avg is not None and exp_avg_sq is not None  # created together, above
            if c.weight_decay != 0:
                if decoupled:
                    if same:
                        p.mul_(1 - lrs[0] * c.weight_decay)
                    else:
                        p.mul_(1 - self._lr_tensor(lrs, p).double().mul(c.weight_decay).to(p.dtype))
                else:
                    g = g.add(p, alpha=c.weight_decay)
            exp_avg.lerp_(g, 1 - beta1)
            exp_avg_sq.mul_(beta2).addcmul_(g, g, value=1 - beta2)
            bias_correction1 = 1 - beta1**step
            bias_correction2 = 1 - beta2**step
            denom = (exp_avg_sq.sqrt() / bias_correction2**0.5).add_(eps)
            if same:
                p.addcdiv_(exp_avg, denom, value=-(lrs[0] / bias_correction1))
            else:
                step_size = torch.tensor([lr / bias_correction1 for lr in lrs], dtype=p.dtype, device=p.device)
                p.addcdiv_(exp_avg * step_size.reshape(-1, *([1] * (p.ndim - 1))), denom, value=-1)

    # ------------------------------------------------------------------ torch optimizer state
    @torch.no_grad()
    def export_to(self, i: int, opt: torch.optim.Optimizer) -> None:
        """Write model i's slice of the state into `opt` (a torch optimizer over model i's
        parameters, in the same order), as torch.optim would hold it after as many steps."""
        params = opt.param_groups[0]["params"]
        for k, p in enumerate(params):
            buf, exp_avg, exp_avg_sq = self.momentum[k], self.exp_avg[k], self.exp_avg_sq[k]
            if self.cfg.name == "sgd":
                if self.cfg.momentum != 0 and buf is not None:
                    opt.state[p] = {"momentum_buffer": buf[i].clone()}
            elif exp_avg is not None:
                assert exp_avg_sq is not None  # set together with exp_avg
                opt.state[p] = {
                    "step": torch.tensor(float(self.step_count)),
                    "exp_avg": exp_avg[i].clone(),
                    "exp_avg_sq": exp_avg_sq[i].clone(),
                }

    @torch.no_grad()
    def import_from(self, opts: list[torch.optim.Optimizer]) -> None:
        """Stack the state of one torch optimizer per model (e.g. after load_state_dict). All
        models must be at the same step (a group resumes from one common checkpoint step)."""
        per_param = [opt.param_groups[0]["params"] for opt in opts]
        for k in range(len(self.params)):
            states = [opt.state.get(ps[k], {}) for opt, ps in zip(opts, per_param)]
            if self.cfg.name == "sgd":
                bufs = [s.get("momentum_buffer") for s in states]
                if all(b is not None for b in bufs):
                    self.momentum[k] = torch.stack([b.to(self.params[k]) for b in bufs])
                elif any(b is not None for b in bufs):
                    raise ValueError("models of a group are at different optimizer steps")
            else:
                if all("exp_avg" in s for s in states):
                    self.exp_avg[k] = torch.stack([s["exp_avg"].to(self.params[k]) for s in states])
                    self.exp_avg_sq[k] = torch.stack([s["exp_avg_sq"].to(self.params[k]) for s in states])
                    steps = {float(s["step"]) for s in states}
                    if len(steps) != 1:
                        raise ValueError("models of a group are at different optimizer steps")
                    self.step_count = int(steps.pop())
                elif any("exp_avg" in s for s in states):
                    raise ValueError("models of a group are at different optimizer steps")
