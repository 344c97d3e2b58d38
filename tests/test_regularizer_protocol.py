"""The regularizer protocol declares itself: hooks are detected from what a class overrides, the
registered name is written once, and vectorization and per-model state are declared on the class."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from reglab.config import ModelConfig, RegularizerConfig
from reglab.models import build_model
from reglab.registry import Registry
from reglab.regularizers import REGULARIZERS, build_regularizer
from reglab.regularizers.base import Options, Regularizer, StepContext
from reglab.vectorized.functional import stateful_attributes, tensor_attributes


def test_hooks_are_detected_from_what_a_class_overrides():
    class OnlyProx(Regularizer):
        def prox(self, model, lam, lr):
            return {}

    class OnlyPenalty(Regularizer):
        def penalty(self, model, ctx):
            return torch.zeros(())

    class Inherits(OnlyProx):
        pass

    assert (OnlyProx.has_penalty, OnlyProx.has_prox, OnlyProx.has_pre_step) == (False, True, False)
    assert (OnlyPenalty.has_penalty, OnlyPenalty.has_prox) == (True, False)
    assert Inherits.has_prox  # an inherited override counts
    # the built-in classes: exactly what they override
    assert REGULARIZERS.get("pathprox").has_prox and REGULARIZERS.get("pathprox").has_penalty
    wd = REGULARIZERS.get("decoupled_weight_decay")
    assert wd.has_pre_step and not wd.has_penalty and not wd.has_prox


def test_a_flag_set_by_hand_is_refused():
    """The bug this prevents: a class that overrides prox but says has_prox = False (or forgets
    to say True) trained to "done" with its prox never called."""
    with pytest.raises(TypeError, match="has_prox"):

        class Forgetful(Regularizer):
            has_prox = False

            def prox(self, model, lam, lr):
                return {}


def test_the_registered_name_is_the_class_name_attribute():
    registry: Registry[type[Regularizer]] = type(REGULARIZERS)("regularizer")

    @registry.register("my_penalty")
    class Mine(Regularizer):
        def penalty(self, model, ctx):
            return torch.zeros(())

    assert Mine.name == "my_penalty" and registry.get("my_penalty") is Mine
    with pytest.raises(ValueError, match="registered as"):

        @registry.register("other")
        class Mismatch(Regularizer):
            name = "something_else"

    for name in REGULARIZERS.names():
        assert REGULARIZERS.get(name).name == name


def _exercised(name: str) -> Regularizer:
    """A regularizer after setup, two penalties and a step in between (its state is populated)."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(name="mlp", widths=[6, 5, 4]), (6,), 4)
    reg = build_regularizer(RegularizerConfig.model_validate({"name": name}))
    reg.setup(model)
    x, y = torch.randn(3, 6), torch.tensor([0, 1, 2])
    out = model(x)
    ctx = StepContext(step=0, x=x, y=y, outputs=out, data_loss=nn.functional.cross_entropy(out, y))
    for _ in range(2):
        if reg.has_penalty:
            reg.penalty(model, ctx)
        if reg.has_prox:
            reg.prox(model, 0.01, 0.1)
        reg.after_step(model, ctx)
    return reg


@pytest.mark.parametrize("name", [n for n in REGULARIZERS.names() if REGULARIZERS.get(n).vectorizes])
def test_vectorizing_regularizers_declare_all_their_per_model_state(name):
    reg = _exercised(name)
    assert set(tensor_attributes(reg)) <= set(reg.per_model_state)
    assert stateful_attributes(reg) == sorted(a for a in reg.per_model_state if getattr(reg, a) is not None)


def test_undeclared_tensor_state_is_an_error_not_a_shared_tensor():
    class Sneaky(Regularizer):
        vectorizes = True
        Options = Options

        def setup(self, model):
            self._anchor = [p.detach().clone() for p in model.parameters()]

        def penalty(self, model, ctx):
            return sum((p - a).pow(2).sum() for p, a in zip(model.parameters(), self._anchor))

    Sneaky.name = "sneaky"
    reg = Sneaky(Options())
    reg.setup(nn.Linear(3, 2))
    with pytest.raises(TypeError, match="per_model_state"):
        stateful_attributes(reg)


def test_a_penalty_that_needs_the_batch_says_so_without_one():
    reg = build_regularizer(RegularizerConfig.model_validate({"name": "gradient_norm"}))
    model = build_model(ModelConfig(name="mlp", widths=[6, 5, 4]), (6,), 4)
    reg.setup(model)
    with pytest.raises(ValueError, match="gradient_norm: its penalty needs"):
        reg.penalty(model, None)
