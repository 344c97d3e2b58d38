"""Optimizers and learning-rate schedules built from the config."""

from __future__ import annotations

import torch
from torch import nn
from torch.optim.lr_scheduler import LRScheduler

from .config import LRScheduleConfig, OptimConfig
from .errors import ConfigError


def build_optimizer(cfg: OptimConfig, model: nn.Module) -> torch.optim.Optimizer:
    """Plain weight decay (optim.weight_decay) is the optimizer's own: coupled for SGD/Adam,
    decoupled for AdamW. Regularizers are separate objects (see regularizers/)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.name == "sgd":
        return torch.optim.SGD(
            params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov, weight_decay=cfg.weight_decay
        )
    if cfg.name == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)


def fraction_milestones(fractions: list[float], horizon: int) -> list[int]:
    """Milestones at round(f * horizon) schedule steps; refused when two coincide (the budget is
    too short to tell them apart)."""
    milestones = [max(1, round(f * horizon)) for f in fractions]
    if len(set(milestones)) != len(milestones):
        raise ConfigError(
            "lr_schedule.milestone_fractions",
            f"{fractions} of a {horizon}-step schedule give the milestones {milestones}, which coincide",
        )
    return milestones


def build_lr_schedule(
    cfg: LRScheduleConfig, optimizer: torch.optim.Optimizer, base_lr: float, horizon: int
) -> LRScheduler | None:
    """`horizon` is the number of schedule steps in the run (epochs or iterations, per cfg.unit).

    Returns None for a constant learning rate.
    """
    if cfg.name == "constant":
        return None
    if cfg.name == "cosine":
        if cfg.eta_min > base_lr:
            # Study 1 used eta_min=0.003 with smaller base rates, which *raises* the lr.
            raise ConfigError(
                "lr_schedule.eta_min", f"{cfg.eta_min} exceeds optim.lr={base_lr}; cosine would raise the learning rate"
            )
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, horizon), eta_min=cfg.eta_min)
    if cfg.name == "multistep":
        if sorted(cfg.milestones) != list(cfg.milestones):
            raise ConfigError("lr_schedule.milestones", "must be increasing")
        milestones = list(cfg.milestones)
        if cfg.milestone_fractions:
            milestones = fraction_milestones(cfg.milestone_fractions, horizon)
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=milestones, gamma=cfg.gamma)
    return torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=cfg.gamma)
