"""Models: architectures and parameter counts of the seed studies, unit groups, init, PaperWN, errors."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from reglab.config import ModelConfig
from reglab.errors import ConfigError
from reglab.models import MODELS, build_model, other_layers, unit_groups, weight_layers
from reglab.models.weightnorm import is_weight_normalized, wn_scale

CIFAR = (3, 32, 32)
MNIST = (1, 28, 28)


def build(name: str, input_shape=CIFAR, num_outputs: int = 10, seed: int = 0, **options) -> nn.Module:
    torch.manual_seed(seed)
    return build_model(ModelConfig(name=name, **options), input_shape, num_outputs)


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def conv(cin: int, cout: int, bias: bool = True) -> int:
    return cin * cout * 9 + (cout if bias else 0)


def fc(nin: int, nout: int, bias: bool = True) -> int:
    return nin * nout + (nout if bias else 0)


def shapes(model: nn.Module) -> list[tuple[int, ...]]:
    return [tuple(layer.weight.shape) for _, layer in weight_layers(model)]


# --- architectures of the seed studies -------------------------------------------------------


def test_small_mlp_of_study_2():
    model = build("mlp", MNIST, widths=[784, 128, 128, 10])
    assert shapes(model) == [(128, 784), (128, 128), (10, 128)]
    assert n_params(model) == 118_282 == fc(784, 128) + fc(128, 128) + fc(128, 10)
    # widths default to [in, 128, 128, out]
    assert n_params(build("mlp", MNIST)) == 118_282


def test_pathprox_mlp_and_mlp_factorized():
    widths = [784, 400, 400, 400, 400, 400, 10]
    expected = fc(784, 400) + 4 * fc(400, 400) + fc(400, 10)
    mlp = build("mlp", MNIST, widths=widths)
    factorized = build("mlp_factorized", MNIST)  # PathProx's default widths
    for model in (mlp, factorized):
        assert n_params(model) == expected
        groups = unit_groups(model)
        assert [(g.inp, g.out) for g in groups] == [
            (model.fc1, model.fc2),
            (model.fc3, model.fc4),
            (model.fc5, model.fc6),
        ]
        assert sum(g.size for g in groups) == 1200
        assert other_layers(model) == []
    assert sum(isinstance(m, nn.ReLU) for m in mlp.modules()) == 5
    # factorized: activation after L1, L3, L5 only
    assert [n for n, m in factorized.named_children() if isinstance(m, nn.ReLU)] == ["fc1_act", "fc3_act", "fc5_act"]


def test_autol2_convnet_matches_study_3():
    model = build("autol2_convnet")
    assert shapes(model) == [(300, 3, 3, 3), (300, 300, 3, 3), (500, 10800), (10, 500)]
    expected = 3 * 300 * 9 + 300 + 300 * 300 * 9 + 300 + 10800 * 500 + 500 + 500 * 10 + 10
    assert n_params(model) == expected == 6_224_210
    bn = build("autol2_convnet", batch_norm=True)
    assert [m.num_features for m in bn.modules() if isinstance(m, nn.BatchNorm2d)] == [300, 300]
    assert n_params(bn) == expected + 2 * 2 * 300
    assert [(g.inp, g.out) for g in unit_groups(model)] == [(model.conv1, model.conv2), (model.fc1, model.fc2)]
    assert unit_groups(bn) == []


def test_hardernet_matches_sks():
    model = build("hardernet", num_outputs=1, bias=False)  # SKS: conv bias off, FC biases on
    assert shapes(model) == [(16, 3, 3, 3), (32, 16, 3, 3), (64, 32, 3, 3), (128, 64, 3, 3), (256, 512), (1, 256)]
    expected = conv(3, 16, False) + conv(16, 32, False) + conv(32, 64, False) + conv(64, 128, False)
    expected += fc(512, 256) + fc(256, 1)
    assert n_params(model) == expected
    assert sum(isinstance(m, nn.AvgPool2d) for m in model.modules()) == 4
    names = [(g.inp, g.out) for g in unit_groups(model)]
    assert names == [(model.conv1, model.conv2), (model.conv3, model.conv4), (model.fc1, model.fc2)]


@pytest.mark.parametrize("conv_bias", [True, False])
def test_underparameterized_cnn_linearbias(conv_bias):
    model = build("underparameterized_cnn_linearbias", num_outputs=1, bias=conv_bias)
    expected = conv(3, 16, conv_bias) + conv(16, 32, conv_bias) + conv(32, 64, conv_bias) + conv(64, 128, conv_bias)
    expected += fc(128, 512) + fc(512, 1)  # FC biases always on
    assert n_params(model) == expected
    assert all((m.bias is not None) == conv_bias for m in model.modules() if isinstance(m, nn.Conv2d))
    assert model.fc1.bias is not None and model.fc2.bias is not None
    assert sum(isinstance(m, nn.AvgPool2d) for m in model.modules()) == 3
    assert not any(isinstance(m, nn.MaxPool2d) for m in model.modules())
    assert len(weight_layers(model)) == 6  # study 1's L


def test_other_binary_cifar_cnns():
    over = build("overparameterized_cnn", num_outputs=1)
    assert n_params(over) == conv(3, 64) + conv(64, 128) + conv(128, 256) + conv(256, 512) + fc(512, 2048) + fc(2048, 1)
    over_bn = build("overparameterized_cnn", num_outputs=1, batch_norm=True)
    assert [type(m).__name__ for m in over_bn.modules() if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d))] == [
        "BatchNorm2d"
    ] * 4 + ["BatchNorm1d"]
    under = build("underparameterized_cnn", num_outputs=1)
    assert sum(isinstance(m, nn.MaxPool2d) for m in under.modules()) == 3
    super_under = build("superunderparameterized_cnn", num_outputs=1)
    assert n_params(super_under) == conv(3, 4) + conv(4, 8) + fc(8, 16) + fc(16, 1)


def test_vgg19_matches_pathprox():
    model = build("vgg19")
    convs = [m for _, m in weight_layers(model) if isinstance(m, nn.Conv2d)]
    assert len(convs) == 16
    assert [c.out_channels for c in convs] == [64, 64, 128, 128] + [256] * 4 + [512] * 8
    groups = unit_groups(model)
    assert len(groups) == 8
    assert sum(g.size for g in groups) == 2752
    assert [m for _, m in other_layers(model)] == [model.fc1]
    assert tuple(model.fc1.weight.shape) == (10, 512)
    assert unit_groups(build("vgg19", batch_norm=True)) == []


def test_vgg11_groups_stay_inside_blocks():
    model = build("vgg11")
    # blocks (64) M (128) M (256 256) M (512 512) M (512 512): the single-conv blocks are left over
    assert [g.name for g in unit_groups(model)] == ["conv3-conv4", "conv5-conv6", "conv7-conv8"]
    assert [n for n, _ in other_layers(model)] == ["conv1", "conv2", "fc1"]


@pytest.mark.parametrize("name", sorted(MODELS.names()))
def test_forward_shapes_binary_and_ten_class(name):
    x = torch.randn(3, *CIFAR)
    assert build(name, num_outputs=1)(x).shape == (3,)
    assert build(name, num_outputs=10)(x).shape == (3, 10)


def test_mlp_flattens_any_input_shape():
    assert build("mlp", (64,), num_outputs=1)(torch.randn(5, 64)).shape == (5,)
    assert build("mlp", MNIST, num_outputs=10)(torch.randn(5, *MNIST)).shape == (5, 10)


def test_cnn_flatten_size_follows_the_input_shape():
    model = build("hardernet", MNIST)  # 28 -> 14 -> 7 -> 3 -> 1
    assert model.fc1.in_features == 128
    assert model(torch.randn(2, *MNIST)).shape == (2, 10)


def test_same_seed_same_model():
    a, b = build("hardernet", seed=3), build("hardernet", seed=3)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    c = build("hardernet", seed=4)
    assert not torch.equal(a.conv1.weight, c.conv1.weight)


# --- unit groups ------------------------------------------------------------------------------


GROUP_CASES = [
    ("mlp", (20,), {"widths": [20, 16, 12, 8, 3]}),
    ("mlp", (20,), {"widths": [20, 16, 12, 3], "activation": "leaky_relu"}),
    ("mlp_factorized", (20,), {"widths": [20, 16, 12, 8, 6, 5, 3]}),
    ("hardernet", (3, 16, 16), {}),
    ("underparameterized_cnn", (3, 16, 16), {}),
    ("autol2_convnet", (3, 18, 18), {}),
    ("vgg11", CIFAR, {}),
]


def rescale_unit(group, j: int, s: float) -> None:
    """Multiply unit j's input weights (row / filter j of W, and its bias) by s; divide V[:, j] by s."""
    with torch.no_grad():
        group.inp.weight[j] *= s
        if group.inp.bias is not None:
            group.inp.bias[j] *= s
        group.out.weight[:, j] /= s


@pytest.mark.parametrize(("name", "shape", "options"), GROUP_CASES)
def test_positive_rescaling_of_a_unit_leaves_the_function_unchanged(name, shape, options):
    model = build(name, shape, num_outputs=3, **options).double().eval()
    x = torch.randn(4, *shape, dtype=torch.float64)
    before = model(x)
    groups = unit_groups(model)
    assert groups
    for group in groups:
        assert group.out.weight.shape[1] == group.inp.weight.shape[0] == group.size
        for j, s in ((0, 3.7), (group.size - 1, 0.3)):
            rescale_unit(group, j, s)
    # float64, so the symmetry is checked far below the 1e-5 a float32 run would allow
    assert torch.allclose(model(x), before, atol=1e-9, rtol=0)


def test_rescaling_without_compensation_changes_the_function():
    # Guards the test above: it must be able to see a change.
    model = build("hardernet", (3, 16, 16), num_outputs=3).double()
    x = torch.randn(4, 3, 16, 16, dtype=torch.float64)
    before = model(x)
    group = unit_groups(model)[0]
    with torch.no_grad():
        group.inp.weight[0] *= 3.7
        group.inp.bias[0] *= 3.7
    assert not torch.allclose(model(x), before, atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("mlp", {"batch_norm": True}),
        ("mlp", {"activation": "gelu"}),
        ("mlp", {"activation": "tanh"}),
        ("mlp_factorized", {"activation": "gelu"}),
        ("underparameterized_cnn", {"batch_norm": True}),
        ("overparameterized_cnn", {"batch_norm": True}),
        ("autol2_convnet", {"batch_norm": True}),
        ("vgg11", {"batch_norm": True}),
        ("hardernet", {"activation": "gelu"}),
    ],
)
def test_no_groups_with_batch_norm_or_a_non_homogeneous_activation(name, options):
    model = build(name, CIFAR, **options)
    assert unit_groups(model) == []
    assert len(other_layers(model)) == len(weight_layers(model))


def test_mlp_left_over_last_layer_is_an_other_layer():
    model = build("mlp", MNIST, widths=[784, 128, 128, 10])
    assert [g.name for g in unit_groups(model)] == ["fc1-fc2"]
    assert [n for n, _ in other_layers(model)] == ["fc3"]


# --- initialisation ---------------------------------------------------------------------------


def test_kaiming_init_std_and_zero_biases():
    model = build("mlp", (1000,), widths=[1000, 1000, 10], init="kaiming")
    assert model.fc1.weight.std().item() == pytest.approx(math.sqrt(2 / 1000), rel=0.02)
    assert model.fc1.weight.mean().abs().item() < 1e-3
    cnn = build("hardernet", init="kaiming")
    assert cnn.conv4.weight.std().item() == pytest.approx(math.sqrt(2 / (64 * 9)), rel=0.03)
    for _, layer in weight_layers(cnn):
        assert torch.count_nonzero(layer.bias) == 0


def test_he_normal_conv_redraws_convs_only():
    he = build("autol2_convnet", init="he_normal_conv", seed=1)
    default = build("autol2_convnet", init="default", seed=1)
    assert he.conv2.weight.std().item() == pytest.approx(math.sqrt(2 / (300 * 9)), rel=0.02)
    assert he.conv1.weight.std().item() == pytest.approx(math.sqrt(2 / 27), rel=0.1)
    # PyTorch's default conv std is far smaller: the scheme did change the convs...
    assert default.conv2.weight.std().item() < 0.7 * he.conv2.weight.std().item()
    # ...and nothing else (conv biases and all Linear layers keep the default draw)
    for name in ("conv1.bias", "conv2.bias", "fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"):
        assert torch.equal(he.get_parameter(name), default.get_parameter(name))


def test_init_scale_multiplies_every_parameter():
    plain = build("mlp", MNIST, batch_norm=True, seed=5)
    scaled = build("mlp", MNIST, batch_norm=True, seed=5, init_scale=0.2)
    pairs = list(zip(plain.named_parameters(), scaled.named_parameters()))
    assert {n.split(".")[-1] for (n, _), _ in pairs} == {"weight", "bias"}
    assert any("bn" in n for (n, _), _ in pairs)  # batch-norm affine parameters are scaled too
    for (_, p), (_, q) in pairs:
        assert torch.allclose(q, 0.2 * p)
    kaiming = build("hardernet", init="kaiming", init_scale=0.5, seed=5)
    kaiming_plain = build("hardernet", init="kaiming", seed=5)
    assert torch.allclose(kaiming.fc1.weight, 0.5 * kaiming_plain.fc1.weight)


def test_init_norm_sets_every_layer_norm():
    model = build("hardernet", init="kaiming", init_norm=0.7)
    norms = [layer.weight.norm().item() for _, layer in weight_layers(model)]
    assert norms == pytest.approx([0.7] * 6, rel=1e-5)


# --- PaperWN ---------------------------------------------------------------------------------


def test_weight_norm_with_given_g0():
    model = build("hardernet", num_outputs=1, weight_norm=True, wn_g0=0.5, init_scale=0.2)
    for _, layer in weight_layers(model):
        assert is_weight_normalized(layer)
        assert wn_scale(layer).item() == pytest.approx(0.5)
        assert layer.weight.norm().item() == pytest.approx(0.5, rel=1e-5)


def test_weight_norm_default_g_preserves_the_function():
    plain = build("hardernet", num_outputs=1, seed=7)
    wn = build("hardernet", num_outputs=1, seed=7, weight_norm=True)
    for (_, a), (_, b) in zip(weight_layers(plain), weight_layers(wn)):
        assert wn_scale(b).item() == pytest.approx(a.weight.norm().item(), rel=1e-6)
        assert b.weight.norm().item() == pytest.approx(abs(wn_scale(b).item()), rel=1e-5)
    x = torch.randn(4, *CIFAR)
    assert torch.allclose(wn(x), plain(x), atol=1e-5)


def test_weight_norm_invariant_holds_after_an_optimizer_step():
    model = build("mlp", (12,), num_outputs=3, widths=[12, 8, 3], weight_norm=True, wn_g0=1.3)
    layers = [layer for _, layer in weight_layers(model)]
    g_before = [wn_scale(layer).detach().clone() for layer in layers]
    v_before = [layer.parametrizations.weight.original.detach().clone() for layer in layers]
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    loss = (model(torch.randn(16, 12)) - torch.randn(16, 3)).pow(2).mean()
    loss.backward()
    opt.step()
    for layer, g0, v0 in zip(layers, g_before, v_before):
        g = wn_scale(layer).detach()
        assert not torch.equal(g, g0)
        assert not torch.equal(layer.parametrizations.weight.original.detach(), v0)
        assert layer.weight.norm().item() == pytest.approx(abs(g.item()), rel=1e-5)
    # the groups still point at the (now parametrized) layers
    group = unit_groups(model)[0]
    assert group.out.weight.shape[1] == group.inp.weight.shape[0] == 8


# --- configuration errors --------------------------------------------------------------------


def expect_config_error(field: str, **build_kwargs) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        build(**build_kwargs)
    assert info.value.field == field
    return info.value


def test_wrong_first_width():
    err = expect_config_error("model.widths", name="mlp", input_shape=MNIST, widths=[100, 32, 10])
    assert "784" in str(err)


def test_wrong_last_width():
    err = expect_config_error("model.widths", name="mlp", input_shape=MNIST, num_outputs=1, widths=[784, 32, 10])
    assert "expected widths[-1] = 1" in str(err)


def test_batch_norm_with_weight_norm_is_an_error():
    expect_config_error("model.batch_norm", name="mlp", input_shape=MNIST, batch_norm=True, weight_norm=True)


def test_unknown_model_name_lists_the_allowed_names():
    with pytest.raises(ConfigError) as info:
        MODELS.get("resnet9000", "model.name")
    assert info.value.field == "model.name"
    assert "hardernet" in info.value.allowed and "vgg19" in info.value.allowed
    assert "vgg19" in str(info.value) and "mlp_factorized" in str(info.value)
    expect_config_error("model.name", name="resnet9000")


def test_options_a_model_does_not_support():
    expect_config_error("model.widths", name="hardernet", widths=[3072, 10])
    expect_config_error("model.batch_norm", name="hardernet", batch_norm=True)
    expect_config_error("model.batch_norm", name="underparameterized_cnn_linearbias", batch_norm=True)
    expect_config_error("model.init", name="mlp", input_shape=MNIST, init="he_normal_conv")
    expect_config_error("model.name", name="hardernet", input_shape=(64,))
    expect_config_error("model.name", name="vgg11", input_shape=MNIST)  # 28×28 shrinks to nothing
