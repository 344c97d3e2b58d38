"""Model names (what configs say) -> builders, and build_model, the one way to make a model.

A builder is any callable (cfg, input_shape, num_outputs) -> nn.Module that checks the options
its architecture supports. build_model adds what is common to all models, in the order the
studies used: construct -> init scheme -> init_scale -> init_norm -> PaperWN.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import torch
from torch import nn

from ..config import ModelConfig
from ..errors import ConfigError
from ..registry import Registry
from . import binary_cnn, convnet, vgg
from .init import init_scheme, scale_parameters, set_weight_norms
from .mlp import build_mlp, build_mlp_factorized
from .weightnorm import apply_paper_wn, apply_rho_wn

ModelBuilder = Callable[[ModelConfig, tuple[int, ...], int], nn.Module]


def _is_builder(obj: object) -> bool:
    """A function, or a Module class built from the same arguments."""
    return callable(obj) and (not isinstance(obj, type) or issubclass(obj, nn.Module))


MODELS: Registry[ModelBuilder] = Registry(
    "model", ("a model builder (a callable (cfg, input_shape, num_outputs) -> torch.nn.Module)", _is_builder)
)
MODELS.add("mlp", build_mlp)
MODELS.add("mlp_factorized", build_mlp_factorized)
for _stack in (
    binary_cnn.overparameterized_cnn,
    binary_cnn.underparameterized_cnn,
    binary_cnn.underparameterized_cnn_avgpool,
    binary_cnn.underparameterized_cnn_linearbias,
    binary_cnn.superunderparameterized_cnn,
    binary_cnn.hardernet,
    convnet.autol2_convnet,
    vgg.vgg11,
    vgg.vgg16,
    vgg.vgg19,
):
    MODELS.add(_stack.name, _stack)


def device_memory_bytes(device: torch.device) -> int | None:
    """Total memory of the device a run trains on (None when it cannot be told)."""
    if device.type == "cuda":
        return int(torch.cuda.get_device_properties(device).total_memory)
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def check_model_size(cfg: ModelConfig, input_shape: tuple[int, ...], num_outputs: int, device: torch.device) -> None:
    """Refuse a model whose training state cannot fit the device, before allocating it: the model
    is built on the meta device (shapes only) and its parameters counted. Training holds about four
    copies of the parameters (weights, gradients, two optimizer moments)."""
    builder = MODELS.get(cfg.name, "model.name")
    with torch.device("meta"):
        probe = builder(cfg, tuple(input_shape), num_outputs)
    n = sum(p.numel() for p in probe.parameters())
    need = 4 * n * 4
    have = device_memory_bytes(device)
    if have is not None and need > have:
        raise ConfigError(
            "model",
            f"{cfg.name} with these widths has {n:,} parameters: training needs about {need / 2**30:,.1f} GiB "
            f"(weights, gradients and optimizer state) and the {device.type} device has {have / 2**30:,.1f} GiB",
        )


def build_model(cfg: ModelConfig, input_shape: tuple[int, ...], num_outputs: int) -> nn.Module:
    """Build, initialise and (optionally) weight-normalise the model `cfg` names.

    `input_shape` is one example's shape; `num_outputs` is the class count, or 1 for a binary
    ±1 task (the model then returns shape (batch,)). The caller seeds torch beforehand.
    """
    builder = MODELS.get(cfg.name, "model.name")
    if num_outputs < 1:
        raise ValueError(f"num_outputs must be >= 1, got {num_outputs}")
    if cfg.weight_norm and cfg.batch_norm:
        # Study 1 silently switched BN off under WN; here the conflict is the user's to resolve.
        raise ConfigError("model.batch_norm", "batch_norm cannot be combined with weight_norm; set one of them false")
    model = builder(cfg, tuple(input_shape), num_outputs)
    if cfg.init == "he_normal_conv" and not any(isinstance(m, nn.Conv2d) for m in model.modules()):
        raise ConfigError("model.init", f"he_normal_conv initialises conv layers and {cfg.name} has none")
    init_scheme(model, cfg.init)
    scale_parameters(model, cfg.init_scale)
    if cfg.init_norm is not None:
        set_weight_norms(model, cfg.init_norm)
    if cfg.weight_norm == "rho":
        apply_rho_wn(model, cfg.wn_g0)
    elif cfg.weight_norm:
        apply_paper_wn(model, cfg.wn_g0)
    return model
