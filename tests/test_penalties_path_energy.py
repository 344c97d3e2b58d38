"""Path energy penalty: per-step and per-epoch update energies, anchors, bias role, state for resume and gradcheck."""

from __future__ import annotations

import io

import pytest
import torch
from torch import nn
from torch.autograd import gradcheck
from torch.func import functional_call

from penalty_helpers import _PenaltyOf, grads_of, make, mlp

# ----------------------------------------------------------------------------------------------
# path energy
# ----------------------------------------------------------------------------------------------


def _shift_weights(model: nn.Module, seed: int) -> list[torch.Tensor]:
    torch.manual_seed(seed)
    deltas = []
    with torch.no_grad():
        for m in model:
            if isinstance(m, nn.Linear):
                d = 0.1 * torch.randn_like(m.weight)
                m.weight.add_(d)
                m.bias.add_(1.0)  # biases are not part of the state
                deltas.append(d)
    return deltas


def test_path_energy_first_step_then_squared_change():
    # The trainer's order at every step: penalty (before the update) -> update -> after_step.
    model = mlp(3, 4, 2)
    reg = make("path_energy")
    reg.setup(model)
    assert reg.penalty(model, None).item() == 0.0  # step 1: E_1 = 0
    d1 = _shift_weights(model, seed=1)  # update 1
    reg.after_step(model, None)
    change1 = sum(float(d.pow(2).sum()) for d in d1)
    # step 2: half the squared length of update 1, gradient theta_2 - theta_1 on the weights only
    assert reg.penalty(model, None).item() == pytest.approx(0.5 * change1)
    grads = grads_of(reg, model)
    torch.testing.assert_close(grads["0.weight"], d1[0])
    torch.testing.assert_close(grads["2.weight"], d1[1])
    assert grads["0.bias"].abs().max() == 0
    d2 = _shift_weights(model, seed=2)  # update 2
    reg.after_step(model, None)
    change2 = sum(float(d.pow(2).sum()) for d in d2)
    assert reg.penalty(model, None).item() == pytest.approx(0.5 * change2)  # step 3
    rep = reg.report(model)
    assert rep["energy_last"] == pytest.approx(change2)
    assert rep["energy_total"] == pytest.approx(change1 + change2)
    assert rep["steps"] == 2


def test_path_energy_with_bias_role_adds_the_biases_path():
    model = mlp(3, 4, 2)
    reg = make("path_energy", roles=["weight", "bias"])
    reg.setup(model)
    reg.penalty(model, None)
    d = _shift_weights(model, seed=1)  # weights by d, every bias by +1
    reg.after_step(model, None)
    n_bias = sum(m.bias.numel() for m in model if isinstance(m, nn.Linear))
    change = sum(float(x.pow(2).sum()) for x in d) + n_bias * 1.0
    assert reg.penalty(model, None).item() == pytest.approx(0.5 * change)
    grads = grads_of(reg, model)
    torch.testing.assert_close(grads["0.weight"], d[0])
    torch.testing.assert_close(grads["0.bias"], torch.ones_like(grads["0.bias"]))
    only_bias = make("path_energy", roles=["bias"])
    only_bias.setup(model)
    only_bias.penalty(model, None)
    _shift_weights(model, seed=2)
    only_bias.after_step(model, None)
    assert only_bias.penalty(model, None).item() == pytest.approx(0.5 * n_bias)


@pytest.mark.parametrize("anchor", ["previous", "init"])
def test_path_energy_per_epoch_sums_the_epochs_updates(anchor):
    """energy_epoch: the updates of the latest step's epoch, the pending last one included (an
    epoch-end evaluation reports between the epoch's last update and the next step's penalty)."""
    from types import SimpleNamespace

    model = mlp(3, 4, 2)
    reg = make("path_energy", anchor=anchor)
    reg.setup(model)
    per_epoch = []
    for epoch, seeds in enumerate([(1, 2, 3), (4, 5)]):
        energies = []
        for seed in seeds:
            reg.penalty(model, None)
            energies.append(sum(float(d.pow(2).sum()) for d in _shift_weights(model, seed)))
            reg.after_step(model, SimpleNamespace(epoch=epoch))
        per_epoch.append(sum(energies))
        rep = reg.report(model)
        assert rep["energy_epoch"] == pytest.approx(per_epoch[-1])
        assert rep["energy_total"] == pytest.approx(sum(per_epoch))


def _trainer_steps(reg, model, seeds) -> list[float]:
    """The trainer's order per step (penalty -> update -> after_step); the updates' energies."""
    energies = []
    for seed in seeds:
        reg.penalty(model, None)
        energies.append(sum(float(d.pow(2).sum()) for d in _shift_weights(model, seed)))
        reg.after_step(model, None)
    return energies


def test_path_energy_counts_every_update_once_whenever_it_is_reported():
    """The update energy is taken from the next step's penalty; a report between steps (as at an
    evaluation) measures the pending last update itself and changes nothing."""
    model = mlp(3, 4, 2)
    reg = make("path_energy")
    reg.setup(model)
    energies = _trainer_steps(reg, model, [11, 12])
    for _ in range(2):  # report is read-only
        rep = reg.report(model)
        assert rep["energy_last"] == pytest.approx(energies[-1])
        assert rep["energy_total"] == pytest.approx(sum(energies))
        assert rep["steps"] == 2
    energies += _trainer_steps(reg, model, [13, 14, 15])
    rep = reg.report(model)
    assert rep["energy_last"] == pytest.approx(energies[-1])
    assert rep["energy_total"] == pytest.approx(sum(energies))
    assert rep["steps"] == 5


def test_path_energy_resume_with_a_pending_update_continues_exactly():
    model = mlp(3, 4, 2)
    reg = make("path_energy")
    reg.setup(model)
    energies = _trainer_steps(reg, model, [21, 22])  # a checkpoint after a step: one update pending
    state = reg.state_dict()
    assert state["pending"] is True
    resumed = make("path_energy")
    resumed.setup(model)
    resumed.load_state_dict(state)
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    for r in (reg, resumed):
        model.load_state_dict(weights)
        more = _trainer_steps(r, model, [23, 24])
    rep_a, rep_b = reg.report(model), resumed.report(model)
    assert rep_a == pytest.approx(rep_b)
    assert rep_b["energy_total"] == pytest.approx(sum(energies + more))
    assert rep_b["steps"] == 4
    # a state written before the pending flag existed had counted every update already
    old = {k: v for k, v in state.items() if k != "pending"}
    legacy = make("path_energy")
    legacy.setup(model)
    legacy.load_state_dict(old)
    assert legacy.report(model)["steps"] == state["steps"]


def test_path_energy_global_is_twice_blocks():
    model = mlp(3, 4, 2)
    blocks, glob = make("path_energy"), make("path_energy", state="global")
    for reg in (blocks, glob):
        reg.setup(model)
    _shift_weights(model, seed=2)
    assert glob.penalty(model, None).item() == pytest.approx(2 * blocks.penalty(model, None).item())


def test_path_energy_anchor_init():
    model = mlp(3, 4, 2)
    reg = make("path_energy", anchor="init")
    reg.setup(model)
    reg.penalty(model, None)
    d1 = _shift_weights(model, seed=3)
    reg.after_step(model, None)
    reg.penalty(model, None)
    d2 = _shift_weights(model, seed=4)
    reg.after_step(model, None)
    total = sum(float((a + b).pow(2).sum()) for a, b in zip(d1, d2, strict=True))
    assert reg.penalty(model, None).item() == pytest.approx(0.5 * total)
    rep = reg.report(model)
    assert rep["penalty"] == pytest.approx(0.5 * total)
    # monitoring still sums the per-step update energies
    e1, e2 = (sum(float(d.pow(2).sum()) for d in ds) for ds in (d1, d2))
    assert rep["energy_last"] == pytest.approx(e2)
    assert rep["energy_total"] == pytest.approx(e1 + e2)
    assert rep["steps"] == 2


def test_path_energy_state_dict_resumes_exactly():
    model = mlp(3, 4, 2)
    reg = make("path_energy")
    reg.setup(model)
    reg.penalty(model, None)
    _shift_weights(model, seed=5)
    reg.after_step(model, None)
    expected = reg.penalty(model, None).item()
    assert expected > 0
    buf = io.BytesIO()
    torch.save(reg.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    resumed = make("path_energy")
    resumed.setup(model)  # would give 0 without the saved state
    assert resumed.penalty(model, None).item() == 0.0
    resumed.load_state_dict(state)
    assert resumed.penalty(model, None).item() == pytest.approx(expected)
    assert resumed.report(model) == reg.report(model)


def test_path_energy_gradcheck():
    model = mlp(3, 4, 2)
    reg = make("path_energy", state="global")
    reg.setup(model)
    _shift_weights(model, seed=7)
    wrapper = _PenaltyOf(reg, model)
    names = [n for n, _ in wrapper.named_parameters()]
    params = tuple(p.detach().clone().requires_grad_(True) for _, p in wrapper.named_parameters())
    assert gradcheck(lambda *ps: functional_call(wrapper, dict(zip(names, ps, strict=True)), ()), params)
