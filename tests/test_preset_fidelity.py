"""The presets run the studies' own settings where their pages say so (seed-studies.md, the
sections cited); what a budget changes is written at the top of each preset and quoted on its page.
Study 4's settings are checked in test_reproduce (test_pathprox_presets_...)."""

from __future__ import annotations

import pytest

from reglab.data import DATASETS
from reglab.reproduce import load_preset, preset_path
from reglab.sweep import expand


def configs(study: str, scale: str) -> list:
    spec, _ = load_preset(preset_path(study, scale))
    return [r.config for r in expand(spec)]


def test_study_2_energy_is_the_studys_setup():
    """§2.3-2.5: MNIST normalized (0.1307, 0.3081), MLP 784-128-128-10, SGD lr 0.1 momentum 0.9,
    batch 128, 10 epochs, cross-entropy, mu = 1e-4 for every penalty, the nuclear norm x2."""
    assert DATASETS.get("mnist").mean == (0.1307,) and DATASETS.get("mnist").std == (0.3081,)
    names = set()
    for c in configs("energy", "paper"):
        assert c.data.dataset == "mnist" and c.data.normalize == "dataset"
        assert c.model.name == "mlp" and c.model.widths == [784, 128, 128, 10]
        assert (c.optim.name, c.optim.lr, c.optim.momentum) == ("sgd", 0.1, 0.9)
        assert c.train.batch_size == 128 and c.train.epochs == 10 and c.train.loss == "auto"
        for r in c.regularizers:
            names.add(r.name)
            assert r.lam == 1e-4
            if r.name == "nuclear_norm":
                assert (r.model_extra or {}).get("graph_energy_convention") is True
    assert names == {"spectral_energy", "nuclear_norm", "frobenius", "graph_energy", "path_energy"}


def test_study_1_multiplicative_cpu_is_the_sks_pipeline():
    """§1.12: cat (3) vs deer (4), 80/20 split, HarderNet with conv bias off, MSE on +-1 (auto for
    a binary task), SGD without momentum, batch 16, CIFAR normalized as §1.4; lambda 0.01 with depth
    normalization (the AWN pairing) and 0.05 without (the SKS scripts'); label noise 0 and 0.1."""
    pairs = set()
    for c in configs("multiplicative", "cpu"):
        assert c.data.dataset == "cifar10" and tuple(c.data.binary_pair) == (3, 4) and c.data.val_fraction == 0.2
        assert c.data.normalize == "dataset" and DATASETS.get("cifar10").std == (0.2470, 0.2435, 0.2616)
        assert c.model.name == "hardernet" and c.model.bias is False and c.model.init == "kaiming"
        assert (c.optim.name, c.optim.momentum) == ("sgd", 0.0) and c.train.batch_size == 16
        assert c.lr_schedule.name == "constant"  # the SKS scripts' default scheduler: none
        (r,) = c.regularizers
        pairs.add((r.name, r.lam, (r.model_extra or {}).get("depth_normalization"), c.data.label_noise))
    assert pairs == {
        (name, lam, dn, noise)
        for name, lam, dn in [
            ("l2_sum", 0.01, "mean"),
            ("l2_mul", 0.01, "geometric"),
            ("l2_sum", 0.05, "none"),
            ("l2_mul", 0.05, "none"),
        ]
        for noise in (0.0, 0.1)
    }


@pytest.mark.parametrize("scale", ["cpu", "paper"])
def test_study_3_autol2_is_the_studys_rule_and_setup(scale):
    """§3.2-3.3: SGD lr 0.01, batch 128, loss CE + lam * sum ||p||^2 over every parameter, inputs
    normalized to [-1, 1]; adaptive runs start at 0.1, measure every 5 steps, factor 10, under the
    study's own rule (compat) except the one setting named official."""
    seen = set()
    for c in configs("autol2", scale):
        assert (c.optim.name, c.optim.lr, c.optim.momentum) == ("sgd", 0.01, 0.0) and c.train.batch_size == 128
        assert c.data.normalize == "custom" and c.data.mean == [0.5] * 3 and c.data.std == [0.5] * 3
        (r,) = c.regularizers
        assert r.name == "l2" and r.roles == ["weight", "bias", "norm"]
        opts = r.schedule.model_extra or {}
        if r.schedule.name == "constant":
            assert r.lam in (0.0, 1e-5, 1e-4, 5e-4)
        else:
            assert r.lam == 0.1 and opts["every"] == 5 and opts.get("factor", 10.0) == 10.0
            seen.add((r.schedule.name, opts["threshold"], opts["compat"]))
    assert seen == {
        ("autol2", 0, True),
        ("autol2", 5, True),
        ("autol2", 10, True),
        ("autol2", 0, False),
        ("advance_l2", 0, True),
        ("advance_l2", 5, True),
    }
