"""Path norm penalty over declared unit groups: hand values, conv groups, rescaling invariance and gradcheck."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from penalty_helpers import assert_gradcheck, make, mlp, set_weights
from reglab.models.structure import UnitGroup
from reglab.regularizers.path_norm import unit_path_norms

# ----------------------------------------------------------------------------------------------
# path norm
# ----------------------------------------------------------------------------------------------


class Grouped(nn.Module):
    """A model that declares its unit groups, as the real models do."""

    def __init__(self, inp: nn.Module, out: nn.Module):
        super().__init__()
        self.inp, self.out = inp, out

    def forward(self, x):
        return self.out(torch.relu(self.inp(x)))

    def unit_groups(self):
        return [UnitGroup("g0", self.inp, self.out)]


@pytest.fixture
def hand_group() -> Grouped:
    """||w_j|| = 5, 0, 1 and ||v_j|| = 1, 5, sqrt 8; bias b = (0, 0, 1)."""
    model = Grouped(nn.Linear(2, 3), nn.Linear(3, 2)).double()
    set_weights(model.inp, [[3.0, 4.0], [0.0, 0.0], [1.0, 0.0]], [0.0, 0.0, 1.0])
    set_weights(model.out, [[1.0, 5.0, 2.0], [0.0, 0.0, 2.0]], [9.0, 9.0])
    return model


def test_path_norm_hand_value(hand_group):
    torch.testing.assert_close(
        unit_path_norms(hand_group.unit_groups()[0]), torch.tensor([5.0, 0.0, math.sqrt(8)], dtype=torch.float64)
    )
    assert make("path_norm").penalty(hand_group, None).item() == pytest.approx(5 + math.sqrt(8))
    # with the bias, w_3 = (1, 0, 1): sqrt 2 * sqrt 8 = 4
    assert make("path_norm", include_bias=True).penalty(hand_group, None).item() == pytest.approx(9.0)
    rep = make("path_norm").report(hand_group)
    assert rep["total"] == pytest.approx(5 + math.sqrt(8))
    assert rep["group.g0"] == pytest.approx(5 + math.sqrt(8))


def test_path_norm_conv_group_and_rescaling_invariance():
    torch.manual_seed(8)
    model = Grouped(nn.Conv2d(2, 3, 3), nn.Conv2d(3, 4, 3)).double()
    w, v = model.inp.weight.detach(), model.out.weight.detach()
    expected = [float(w[j].norm() * v[:, j].norm()) for j in range(3)]
    group = model.unit_groups()[0]
    np.testing.assert_allclose(unit_path_norms(group).detach().numpy(), expected, rtol=1e-12)
    with torch.no_grad():
        model.inp.weight[1] *= 7.0
        model.out.weight[:, 1] /= 7.0
    np.testing.assert_allclose(unit_path_norms(group).detach().numpy(), expected, rtol=1e-12)
    # a change that is not a rescaling does change it
    with torch.no_grad():
        model.inp.weight[1] *= 7.0
    assert unit_path_norms(group)[1].item() == pytest.approx(7 * expected[1])


def test_path_norm_needs_unit_groups():
    with pytest.raises(ValueError, match="unit groups"):
        make("path_norm").setup(mlp(3, 4, 2))


@pytest.mark.parametrize("include_bias", [False, True])
def test_path_norm_gradcheck(include_bias):
    torch.manual_seed(9)
    model = Grouped(nn.Linear(3, 4), nn.Linear(4, 2)).double()
    assert_gradcheck(make("path_norm", include_bias=include_bias), model)
