"""Analysis: spectra and ranks, margins, hidden-layer margins, sparsity, analyze_final."""

from __future__ import annotations

import json
import math
from collections import OrderedDict

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from reglab.analysis import (
    analyze_final,
    compute_margins,
    hidden_layer_distances,
    hidden_margins,
    layer_spectra,
    margin_distributions,
    matrix_metrics,
    norm_one_network,
    signature,
    spectra_rows,
    spectral_complexity,
    summarize,
    unit_sparsity,
)
from reglab.config import AnalysisConfig, ModelConfig
from reglab.data import TaskData
from reglab.models.network import SqueezeLastDim
from reglab.models.registry import build_model

F32_EPS = torch.finfo(torch.float32).eps


def make_task(x_train, y_train, x_test, y_test, task, x_val=None, y_val=None) -> TaskData:
    binary = task == "binary"
    return TaskData(
        x_train=x_train,
        y_train=y_train,
        x_val=x_val,
        y_val=y_val,
        x_test=x_test,
        y_test=y_test,
        task=task,
        num_outputs=1 if binary else int(y_train.max()) + 1,
        input_shape=tuple(x_train.shape[1:]),
        augment=None,
        meta={},
    )


def binary_linear(d: int, bias: bool = True, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(OrderedDict(fc=nn.Linear(d, 1, bias=bias), squeeze=SqueezeLastDim()))


def relu_mlp(bias: bool, seed: int = 0, widths=(6, 8, 7, 3)) -> nn.Module:
    torch.manual_seed(seed)
    layers = OrderedDict()
    for i in range(len(widths) - 1):
        layers[f"fc{i + 1}"] = nn.Linear(widths[i], widths[i + 1], bias=bias)
        if i < len(widths) - 2:
            layers[f"act{i + 1}"] = nn.ReLU()
    model = nn.Sequential(layers)
    with torch.no_grad():  # norms far from 1, so the normalization matters
        for i, p in enumerate(model.parameters()):
            p.mul_(1.5 + i)
    return model


def binary_task(n=40, d=5, seed=1, val=False):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    y = torch.where(torch.rand(n, generator=g) < 0.5, -1.0, 1.0)
    xt = torch.randn(n // 2, d, generator=g)
    yt = torch.where(torch.rand(n // 2, generator=g) < 0.5, -1.0, 1.0)
    kw = {}
    if val:
        kw = {"x_val": torch.randn(7, d, generator=g), "y_val": torch.ones(7)}
    return make_task(x, y, xt, yt, "binary", **kw)


def class_task(n=30, d=6, k=3, seed=2):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    y = torch.randint(0, k, (n,), generator=g)
    xt = torch.randn(n, d, generator=g)
    yt = torch.randint(0, k, (n,), generator=g)
    y[:k] = torch.arange(k)  # every class present
    return make_task(x, y, xt, yt, "classes")


# ----------------------------------------------------------------------------- spectra


def test_diagonal_matrix_ranks_and_norms():
    s = [10.0, 1.0, 0.05, 0.001, 0.0]
    w = torch.diag(torch.tensor(s))
    m, sv = matrix_metrics(w)
    # sigma / sigma_max = 1, 0.1, 0.005, 1e-4, 0: two exceed 0.01
    assert m["rank_rel"] == 2
    # tolerance 10 * 5 * eps32 ~ 6e-6: only the exact zero falls below
    assert m["rank_numerical"] == 4 == int(torch.linalg.matrix_rank(w))
    assert m["spectral_norm"] == pytest.approx(10.0)
    assert m["nuclear_norm"] == pytest.approx(sum(s), rel=1e-6)
    assert m["frobenius_norm"] == pytest.approx(math.sqrt(sum(v * v for v in s)), rel=1e-6)
    assert m["stable_rank"] == pytest.approx(sum(v * v for v in s) / 100.0, rel=1e-6)
    assert m["full_rank"] == 5 and (m["rows"], m["cols"]) == (5, 5)
    np.testing.assert_allclose(sv, s, rtol=1e-6, atol=1e-7)
    m2, _ = matrix_metrics(torch.diag(torch.tensor([10.0, 1.0, 0.5, 0.001, 0.0])))
    assert m2["rank_rel"] == 3


def test_numerical_rank_tolerance_uses_the_larger_dimension():
    # sigma = (1, 5e-5): tol = 1 * 1000 * eps32 ~ 1.2e-4 drops 5e-5; with min dimension 3 it would stay
    g = torch.Generator().manual_seed(0)
    u, _ = torch.linalg.qr(torch.randn(3, 3, generator=g, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(1000, 3, generator=g, dtype=torch.float64))
    w = (u @ torch.diag(torch.tensor([1.0, 5e-5, 0.0], dtype=torch.float64)) @ v.T).float()
    m, _ = matrix_metrics(w)
    assert 1000 * F32_EPS > 5e-5 > 3 * F32_EPS
    assert m["rank_numerical"] == 1 == int(torch.linalg.matrix_rank(w))
    assert m["rank_rel"] == 1


def test_effective_rank_extremes():
    rank_one = torch.outer(torch.arange(1.0, 5.0), torch.tensor([1.0, -2.0, 0.5]))
    assert matrix_metrics(rank_one)[0]["effective_rank"] == pytest.approx(1.0, abs=1e-5)
    assert matrix_metrics(torch.eye(7))[0]["effective_rank"] == pytest.approx(7.0, rel=1e-6)
    # two equal singular values and one zero: entropy ln 2
    assert matrix_metrics(torch.diag(torch.tensor([3.0, 3.0, 0.0])))[0]["effective_rank"] == pytest.approx(2.0)
    # unequal: p = (2/3, 1/3), not the squared-value weights (0.8, 0.2)
    p = np.array([2 / 3, 1 / 3])
    expected = math.exp(-(p * np.log(p)).sum())
    assert matrix_metrics(torch.diag(torch.tensor([2.0, 1.0])))[0]["effective_rank"] == pytest.approx(
        expected, rel=1e-6
    )
    zero = matrix_metrics(torch.zeros(3, 4))[0]
    assert zero["effective_rank"] == 0 and zero["rank_rel"] == 0 and zero["stable_rank"] == 0


def test_layer_spectra_reshapes_convs_and_names_layers():
    torch.manual_seed(0)
    model = nn.Sequential(OrderedDict(conv=nn.Conv2d(3, 4, 3), act=nn.ReLU(), flat=nn.Flatten(), fc=nn.Linear(4, 2)))
    frame, spectra = layer_spectra(model)
    assert list(frame["layer"]) == ["conv", "fc"]
    assert (frame.loc[0, "rows"], frame.loc[0, "cols"]) == (4, 27)
    ref = torch.linalg.svdvals(model.conv.weight.detach().reshape(4, 27)).numpy()
    np.testing.assert_allclose(spectra["conv"], ref, rtol=1e-6)
    for col in ("spectral_norm", "rank_rel", "rank_numerical", "effective_rank", "stable_rank", "nuclear_norm"):
        assert col in frame.columns
    rows = spectra_rows(model, step=17)
    assert [r["layer"] for r in rows] == ["conv", "fc"] and all(r["step"] == 17 for r in rows)
    json.dumps(rows)  # plain Python values, ready for a JSONL log


def test_paper_wn_ranks_use_the_effective_weight():
    torch.manual_seed(0)
    model = build_model(ModelConfig(name="mlp", widths=[6, 5, 4, 2], weight_norm=True, wn_g0=2.5), (6,), 2)
    frame, spectra = layer_spectra(model)
    np.testing.assert_allclose(frame["frobenius_norm"], 2.5, rtol=1e-5)  # ||W||_F = |g|
    v = model.fc1.parametrizations.weight.original.detach()
    np.testing.assert_allclose(spectra["fc1"], (2.5 * torch.linalg.svdvals(v) / v.norm()).numpy(), rtol=1e-5)
    with torch.no_grad():
        model.fc1.parametrizations.weight[0].g.fill_(7.0)
    assert layer_spectra(model)[0].loc[0, "spectral_norm"] == pytest.approx(
        float(7.0 * torch.linalg.svdvals(v)[0] / v.norm()), rel=1e-5
    )


# ----------------------------------------------------------------------------- margins


def test_binary_linear_margins_by_hand():
    data = binary_task()
    model = binary_linear(5, bias=True)
    w, b = model.fc.weight.detach()[0], model.fc.bias.detach()[0]
    d = margin_distributions(model, data, splits=("train", "test"))
    f = data.x_train @ w + b
    raw = (data.y_train * f).double().numpy()
    wn = float(w.norm())
    np.testing.assert_allclose(d[("train", "raw")], raw, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(d[("train", "frobenius")], raw / wn, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(d[("train", "spectral")], raw / wn, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(d[("train", "spectral_complexity")], raw / wn, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(d[("train", "norm_one")], raw / wn, rtol=1e-5, atol=1e-6)  # bias scaled too
    np.testing.assert_allclose(d[("train", "output_std")], raw / float(f.double().std(correction=0)), rtol=1e-5)
    assert ("val", "raw") not in d and d[("test", "raw")].shape == (20,)

    # without bias, the Frobenius-normalized margin is the signed distance to the hyperplane w.x = 0
    model0 = binary_linear(5, bias=False)
    w0 = model0.fc.weight.detach()[0]
    dist = (data.y_train * (data.x_train @ w0) / w0.norm()).numpy()
    np.testing.assert_allclose(margin_distributions(model0, data, ("train",))[("train", "frobenius")], dist, rtol=1e-5)


def test_multiclass_linear_margins_by_hand_and_limit():
    data = class_task()
    torch.manual_seed(3)
    model = nn.Linear(6, 3)
    res = compute_margins(model, data, splits=("train",), limit=11)
    raw = res.distributions[("train", "raw")]
    assert raw.shape == (11,)
    out = model(data.x_train[:11]).detach()
    for i in range(11):
        yi = int(data.y_train[i])
        others = [float(out[i, j]) for j in range(3) if j != yi]
        assert raw[i] == pytest.approx(float(out[i, yi]) - max(others), abs=1e-5)
    std = float(out.double().std(correction=0))  # over all 11 * 3 logits
    assert res.normalizers["output_std"]["train"] == pytest.approx(std, rel=1e-6)
    np.testing.assert_allclose(res.distributions[("train", "output_std")], raw / std, rtol=1e-6)
    x_fro = float(data.x_train[:11].double().norm()) / 11
    assert res.normalizers["input_frobenius_over_n"]["train"] == pytest.approx(x_fro)


def test_output_std_zero_leaves_margin_undivided():
    data = binary_task()
    model = binary_linear(5)
    with torch.no_grad():
        model.fc.weight.zero_()
        model.fc.bias.fill_(0.5)
    d = margin_distributions(model, data, ("train",))
    np.testing.assert_allclose(d[("train", "output_std")], d[("train", "raw")])
    assert np.isnan(d[("train", "frobenius")]).all()  # quotient by Π||W|| = 0


@pytest.mark.parametrize("bias", [False, True])
def test_norm_one_network_is_f_over_product_of_frobenius_norms(bias):
    model = relu_mlp(bias)
    x = torch.randn(25, 6)
    prod = math.prod(float(m.weight.detach().norm()) for m in model if isinstance(m, nn.Linear))
    assert prod > 10
    normed = norm_one_network(model)
    torch.testing.assert_close(normed(x), model(x) / prod, rtol=1e-5, atol=1e-6)
    for m in normed:
        if isinstance(m, nn.Linear):
            assert float(m.weight.detach().norm()) == pytest.approx(1.0, rel=1e-6)
    if bias:  # the old rule (weights normalized, biases untouched) is not the quotient
        naive = norm_one_network(model)
        with torch.no_grad():
            for m_old, m_new in zip(model, naive, strict=True):
                if isinstance(m_old, nn.Linear):
                    m_new.bias.copy_(m_old.bias)
        assert not torch.allclose(naive(x), model(x) / prod, rtol=1e-3, atol=1e-4)


def test_norm_one_network_conv_pool_and_paper_wn():
    torch.manual_seed(4)
    conv = nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(3 * 4 * 4, 2)
    )
    x = torch.randn(4, 2, 8, 8)
    prod = math.prod(float(m.weight.detach().norm()) for m in conv if isinstance(m, (nn.Linear, nn.Conv2d)))
    torch.testing.assert_close(norm_one_network(conv)(x), conv(x) / prod, rtol=1e-5, atol=1e-6)

    model = build_model(ModelConfig(name="mlp", widths=[6, 5, 4, 2], weight_norm=True, wn_g0=3.0), (6,), 2)
    x = torch.randn(9, 6)
    normed = norm_one_network(model)
    torch.testing.assert_close(normed(x), model(x) / 27.0, rtol=1e-5, atol=1e-6)
    assert float(normed.fc1.parametrizations.weight[0].g.detach()) == pytest.approx(1.0)
    assert float(model.fc1.parametrizations.weight[0].g.detach()) == pytest.approx(3.0)  # original untouched
    with torch.no_grad():  # a negative g: the norm-one layer keeps its sign (g -> g/|g| = -1)
        model.fc2.parametrizations.weight[0].g.fill_(-3.0)
    torch.testing.assert_close(norm_one_network(model)(x), model(x) / 27.0, rtol=1e-5, atol=1e-6)


def test_spectral_complexity_two_layer_linear_by_hand():
    model = nn.Sequential(OrderedDict(a=nn.Linear(2, 3, bias=False), b=nn.Linear(3, 1, bias=False)))
    w1 = torch.tensor([[3.0, 4.0], [0.0, 0.0], [0.0, 1.0]])
    w2 = torch.tensor([[1.0, 2.0, 2.0]])
    with torch.no_grad():
        model.a.weight.copy_(w1)
        model.b.weight.copy_(w2)
    # ||A1^T||_{2,1} = sum of the row norms of A1 = 5 + 0 + 1 (column norms would give 3 + sqrt 17)
    s1 = math.sqrt(13 + math.sqrt(160))  # eigenvalues of A1^T A1: 13 ± sqrt(160)
    s2 = 3.0
    expected = s1 * s2 * ((6.0 / s1) ** (2 / 3) + (3.0 / s2) ** (2 / 3)) ** 1.5
    assert spectral_complexity(model) == pytest.approx(expected, rel=1e-6)
    # reference M_1 = A1, M_2 = 0: the first term vanishes, R_A = s1 * s2 * (3 / s2) = 3 s1
    ref = {"a": w1.clone(), "b": torch.zeros(1, 3)}
    assert spectral_complexity(model, ref) == pytest.approx(3.0 * s1, rel=1e-6)


# ----------------------------------------------------------------------------- hidden margins


def test_hidden_margin_at_input_of_linear_binary_model_is_exact_distance():
    data = binary_task()
    model = binary_linear(5, bias=True)
    w, b = model.fc.weight.detach()[0], model.fc.bias.detach()[0]
    dists, tv = hidden_layer_distances(model, data.x_train, data.y_train, batch_size=7)
    expected = (data.y_train * (data.x_train @ w + b) / w.norm()).numpy()
    np.testing.assert_allclose(dists["fc"], expected, rtol=1e-5, atol=1e-6)
    x = data.x_train.double().numpy()
    assert tv["fc"] == pytest.approx(math.sqrt(np.trace(np.cov(x.T, bias=True))), rel=1e-9)


def test_hidden_margins_of_relu_mlp_at_each_layer_input():
    data = class_task()
    model = relu_mlp(True, widths=(6, 8, 3))
    dists, _ = hidden_layer_distances(model, data.x_train, data.y_train)
    out = model(data.x_train).detach()
    y = data.y_train
    j = out.scatter(1, y[:, None], float("-inf")).argmax(1)
    gap = out.gather(1, y[:, None]).squeeze(1) - out.gather(1, j[:, None]).squeeze(1)
    w2 = model.fc2.weight.detach()
    # f is affine in the input of fc2: the linearized distance there is exact
    np.testing.assert_allclose(dists["fc2"], (gap / (w2[y] - w2[j]).norm(dim=1)).numpy(), rtol=1e-5, atol=1e-6)
    # at the network input: gradient of (f_y - f_j) is (W2[y]-W2[j]) diag(relu') W1
    w1, b1 = model.fc1.weight.detach(), model.fc1.bias.detach()
    mask = ((data.x_train @ w1.T + b1) > 0).float()
    grad = ((w2[y] - w2[j]) * mask) @ w1
    np.testing.assert_allclose(dists["fc1"], (gap / grad.norm(dim=1)).numpy(), rtol=1e-5, atol=1e-6)


def test_signature_quartiles_and_fences():
    s = signature(np.arange(1.0, 10.0))
    assert (s["q1"], s["median"], s["q3"]) == (3.0, 5.0, 7.0)
    assert s["lower_fence"] == 3.0 - 1.5 * 4.0 and s["upper_fence"] == 7.0 + 1.5 * 4.0
    assert signature(np.array([-1.0, 2.0, np.nan, 4.0]), positive_only=True)["n"] == 2

    data = class_task()
    model = relu_mlp(True, widths=(6, 8, 3))
    res = hidden_margins(model, data, splits=("train", "test"), limit=20)
    assert list(res.summary.columns[:2]) == ["split", "layer"]
    for col in ("q1", "median", "q3", "lower_fence", "upper_fence", "tv"):
        assert col in res.summary.columns
    assert len(res.summary) == 4 and list(res.summary["depth"][:2]) == [0, 1]
    row = res.summary.iloc[1]
    v = res.normalized[("train", "fc2")]
    assert v.shape == (20,)
    np.testing.assert_allclose(v, res.distances[("train", "fc2")] / row["tv"])
    q1, q3 = np.quantile(v, [0.25, 0.75])
    assert row["lower_fence"] == pytest.approx(q1 - 1.5 * (q3 - q1))
    assert row["upper_fence"] == pytest.approx(q3 + 1.5 * (q3 - q1))


# ----------------------------------------------------------------------------- sparsity


def test_unit_sparsity_counts_exact_zeros_and_threshold():
    torch.manual_seed(0)
    model = build_model(ModelConfig(name="mlp", widths=[4, 5, 3]), (4,), 3)
    with torch.no_grad():
        model.fc2.weight[:, 0] = 0.0  # unit 0: no output weights
        model.fc1.weight[1] = 0.0  # unit 1: no input weights
        model.fc1.weight[2] *= 1e-6  # unit 2: tiny but nonzero
        model.fc2.weight[:, 2] *= 1e-6
    units, summary = unit_sparsity(model, threshold=1e-8)
    assert list(units.columns) == ["group", "unit", "in_norm", "out_norm", "path_norm"]
    assert len(units) == 5 and summary["units"] == 5
    expected = (model.fc1.weight.norm(dim=1) * model.fc2.weight.norm(dim=0)).detach().double().numpy()
    np.testing.assert_allclose(units["path_norm"], expected, rtol=1e-6)
    assert summary["active_units"] == 3 and summary["active_units_pct"] == pytest.approx(60.0)
    assert summary["active_units_thresh"] == 2
    assert summary["active_units_pct_thresh"] == pytest.approx(40.0)
    assert summary["path_norm_total"] == pytest.approx(float(expected.sum()))
    assert summary["groups"]["fc1-fc2"]["active_units"] == 3

    units, summary = unit_sparsity(relu_mlp(True, widths=(6, 3)))
    assert units.empty and summary["has_unit_groups"] is False and "no unit groups" in summary["note"]


# ----------------------------------------------------------------------------- run level


def test_summarize_columns_and_values():
    dists = {("train", "raw"): np.array([1.0, 2.0, 3.0, 4.0])}
    frame = summarize(dists)
    assert list(frame.columns) == [
        "split",
        "kind",
        "n",
        "min",
        "q05",
        "q25",
        "median",
        "q75",
        "q95",
        "max",
        "mean",
        "std",
    ]
    row = frame.iloc[0]
    assert (row["n"], row["min"], row["median"], row["max"], row["mean"]) == (4, 1.0, 2.5, 4.0, 2.5)
    assert row["std"] == pytest.approx(np.std([1, 2, 3, 4]))


def test_analyze_final_writes_files_and_leaves_model_alone(tmp_path):
    torch.manual_seed(0)
    data = class_task(n=30, d=6, k=3)
    data.x_val, data.y_val = data.x_test[:5], data.y_test[:5]
    model = build_model(ModelConfig(name="mlp", widths=[6, 8, 3]), (6,), 3)
    model.train()
    model.fc2.eval()  # mixed modes must come back as they were
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = AnalysisConfig(hidden_margins=True, margin_limit=12)
    out = tmp_path / "analysis"
    scalars = analyze_final(model, data, cfg, out, step=99)

    for name in (
        "margins.npz",
        "margins_summary.csv",
        "margins_normalizers.json",
        "hidden_margins.csv",
        "hidden_margins.npz",
        "ranks.csv",
        "singular_values.npz",
        "sparsity_units.csv",
        "sparsity.json",
    ):
        assert (out / name).is_file(), name
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
    with np.load(out / "margins.npz") as z:
        assert "train/norm_one" in z.files and "val/raw" in z.files
        assert z["train/raw"].dtype == np.float32 and z["train/raw"].shape == (12,)
    ranks = pd.read_csv(out / "ranks.csv")
    assert list(ranks["step"]) == [99, 99] and list(ranks["layer"]) == ["fc1", "fc2"]
    with np.load(out / "singular_values.npz") as z:
        assert sorted(z.files) == ["fc1", "fc2"]
    assert json.loads((out / "sparsity.json").read_text())["units"] == 8

    for key in (
        "margin.train.norm_one.mean",
        "margin.test.raw.median",
        "margin.val.spectral_complexity.median",
        "rank_rel.fc1",
        "effective_rank.fc2",
        "active_units_pct",
        "path_norm_total",
        "spectral_complexity",
    ):
        assert key in scalars and isinstance(scalars[key], float), key
    assert len(scalars) <= 50

    assert model.training and not model.fc2.training and model.fc1.training
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert all(p.grad is None for p in model.parameters())


def test_analyze_final_respects_switches(tmp_path):
    data = binary_task()
    model = binary_linear(5)
    cfg = AnalysisConfig(margins=False, spectra=True, sparsity=True, hidden_margins=False)
    scalars = analyze_final(model, data, cfg, tmp_path / "a", step=0)
    names = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert names == ["classification.json", "misclassified.npz", "ranks.csv", "singular_values.npz", "sparsity.json"]
    assert json.loads((tmp_path / "a" / "sparsity.json").read_text())["has_unit_groups"] is False
    assert set(scalars) == {
        "rank_rel.fc",
        "effective_rank.fc",
        "spectral_norm.fc",
        "nuclear_norm_sum",
        "frobenius_sq_sum",
        "rank_rel_sum",
        "f1.train",
        "f1.test",
        "confidence.train",
        "confidence.test",
    }
    w = model.fc.weight.detach().double()
    sv = torch.linalg.svdvals(w)
    assert scalars["rank_rel_sum"] == int((sv / sv.max() > 0.01).sum())  # one layer: its relative rank
    assert scalars["nuclear_norm_sum"] == pytest.approx(float(torch.linalg.svdvals(w).sum()), rel=1e-5)
    assert scalars["frobenius_sq_sum"] == pytest.approx(float((w**2).sum()), rel=1e-5)
    assert scalars["spectral_norm.fc"] == pytest.approx(float(torch.linalg.svdvals(w).max()), rel=1e-5)


@pytest.mark.parametrize("binary", [True, False])
def test_classification_report_matches_sklearn(binary, tmp_path):
    """Confusion matrix, F1 (binary: positive class; classes: macro) and misclassified indices
    against scikit-learn on the same predictions; binary confidence = mean |f(x)|."""
    from sklearn.metrics import confusion_matrix, f1_score

    from reglab.analysis.classification import classification_report

    if binary:
        data, model = binary_task(), binary_linear(5)
    else:
        data, model = class_task(), relu_mlp(bias=True)
    rep = classification_report(model, data)
    with torch.no_grad():
        f = model(data.x_test)
    truth = data.y_test.numpy()
    if binary:
        pred = torch.sign(f).numpy()
        labels = [-1, 1]
        f1 = f1_score(truth, pred, pos_label=1, labels=labels, average="binary")
        assert rep["test"]["confidence"] == pytest.approx(float(f.abs().mean()), rel=1e-6)
    else:
        pred = f.argmax(-1).numpy()
        labels = list(range(f.shape[-1]))
        f1 = f1_score(truth, pred, average="macro", labels=sorted(set(truth) | set(pred)))
    assert rep["test"]["confusion"] == confusion_matrix(truth, pred, labels=labels).tolist()
    assert rep["test"]["f1"] == pytest.approx(f1)
    assert rep["test"]["misclassified"].tolist() == np.flatnonzero(pred != truth).tolist()
