"""Loss landscapes: directions, grid evaluation, resume, writers, run-level entry point."""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from helpers import small_config
from reglab.config import LandscapeConfig
from reglab.errors import ConfigError
from reglab.landscape import (
    evaluate_grid,
    grid_axis,
    landscape_for_model,
    landscape_for_run,
    parse_landscape_overrides,
    pca_directions,
    perturbed_parameters,
    random_directions,
    read_npz,
    vtp_text,
)
from reglab.models.weightnorm import apply_paper_wn


def mse(out, y):
    return F.mse_loss(out, y)


def mlp(bn: bool = False, seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    layers = [nn.Flatten(), nn.Linear(6, 8)]
    if bn:
        layers.append(nn.BatchNorm1d(8))
    layers += [nn.ReLU(), nn.Linear(8, 3)]
    return nn.Sequential(*layers)


def data(n=64, d=6, classes=3, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g), torch.randint(0, classes, (n,), generator=g)


def snapshot(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_same_state(model, before):
    after = model.state_dict()
    assert before.keys() == after.keys()
    for k in before:
        assert torch.equal(before[k], after[k]), k  # bit-identical


# ----------------------------------------------------------------------------- quadratic


@pytest.mark.parametrize("include_bias", [False, True])
@pytest.mark.parametrize("reuse", [True, False])
def test_quadratic_landscape_matches_closed_form(include_bias, reuse):
    """A linear model with MSE on a fixed design: L(a, b) is an exact quadratic in (a, b)."""
    torch.manual_seed(3)
    n, d = 50, 5
    X = torch.randn(n, d, dtype=torch.float64)
    Y = torch.randn(n, 1, dtype=torch.float64)
    model = nn.Linear(d, 1).double()
    dirs = random_directions(model, 2, "none", seed=7, include_bias=include_bias)
    full = [dirs.full(model, k) for k in range(2)]
    W, b = model.weight.detach(), model.bias.detach()
    R0 = (X @ W.T + b - Y).numpy().ravel()
    A = (X @ full[0]["weight"].T + full[0]["bias"]).numpy().ravel()
    B = (X @ full[1]["weight"].T + full[1]["bias"]).numpy().ravel()
    if not include_bias:
        assert not full[0]["bias"].any() and not full[1]["bias"].any()
    c = {k: float(np.mean(v)) for k, v in dict(rr=R0 * R0, ra=R0 * A, rb=R0 * B, aa=A * A, ab=A * B, bb=B * B).items()}
    alphas, betas = grid_axis(-2, 2, 7), grid_axis(-1, 3, 5)
    g = evaluate_grid(model, dirs, X, Y, mse, "binary", alphas, betas, reuse_first_layer=reuse)
    aa, bb = np.meshgrid(alphas, betas)
    closed = c["rr"] + 2 * aa * c["ra"] + 2 * bb * c["rb"] + aa**2 * c["aa"] + 2 * aa * bb * c["ab"] + bb**2 * c["bb"]
    assert g.loss.shape == (5, 7)
    np.testing.assert_allclose(g.loss, closed, rtol=0, atol=1e-5)
    assert np.isclose(g.loss[np.argmin(np.abs(betas)), np.argmin(np.abs(alphas))], c["rr"]) or 0 not in betas


def test_quadratic_1d_line():
    torch.manual_seed(4)
    X, Y = torch.randn(30, 4, dtype=torch.float64), torch.randn(30, 1, dtype=torch.float64)
    model = nn.Linear(4, 1, bias=False).double()
    dirs = random_directions(model, 1, "layer", seed=1)
    D = dirs.vectors[0][0]
    R0 = (X @ model.weight.detach().T - Y).numpy().ravel()
    A = (X @ D.T).numpy().ravel()
    alphas = grid_axis(-3, 3, 13)
    g = evaluate_grid(model, dirs, X, Y, mse, "binary", alphas)
    np.testing.assert_allclose(g.loss, [np.mean((R0 + a * A) ** 2) for a in alphas], atol=1e-5, rtol=0)
    assert g.loss.shape == (13,) and g.betas is None


# ----------------------------------------------------------------------------- model restored


def test_model_restored_exactly_and_modes_kept():
    model = mlp(bn=True)
    x, y = data()
    model.train()
    model(x)  # give BN running stats non-default values
    model[2].eval()  # mixed modes must come back as they were
    before = snapshot(model)
    modes = [m.training for m in model.modules()]
    dirs = random_directions(model, 2, "filter", seed=0, include_bias=True)
    evaluate_grid(model, dirs, x, y, F.cross_entropy, "classes", grid_axis(-1, 1, 4), grid_axis(-1, 1, 4))
    assert_same_state(model, before)
    assert [m.training for m in model.modules()] == modes


def test_model_restored_after_exception_mid_grid():
    model = mlp(bn=True)
    x, y = data()
    model.train()
    before = snapshot(model)

    def boom(k, n):
        if k == 1:
            raise KeyboardInterrupt

    dirs = random_directions(model, 2, "filter", seed=0)
    with pytest.raises(KeyboardInterrupt):
        evaluate_grid(
            model, dirs, x, y, F.cross_entropy, "classes", grid_axis(-1, 1, 5), grid_axis(-1, 1, 5), on_unit=boom
        )
    assert_same_state(model, before)
    assert all(m.training for m in model.modules())
    assert model[1].forward.__func__ is nn.Linear.forward  # first-layer reuse uninstalled


# ----------------------------------------------------------------------------- directions


def test_filter_normalization_matches_weight_filter_norms():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 5, 3), nn.ReLU(), nn.Flatten(), nn.Linear(5 * 4 * 4, 7))
    with torch.no_grad():
        model[0].weight[2].zero_()  # a dead filter gets a zero direction filter
    dirs = random_directions(model, 2, "filter", seed=3, include_bias=True)
    named = dict(model.named_parameters())
    assert dirs.names == ["0.weight", "0.bias", "3.weight", "3.bias"]
    for k in range(2):
        for name, d in zip(dirs.names, dirs.vectors[k]):
            p = named[name].detach()
            if p.dim() >= 2:
                dn = d.reshape(d.shape[0], -1).norm(dim=1)
                pn = p.reshape(p.shape[0], -1).norm(dim=1)
                torch.testing.assert_close(dn, pn, rtol=1e-5, atol=1e-7)
            else:  # 1-D tensors: per tensor
                torch.testing.assert_close(d.norm(), p.norm(), rtol=1e-5, atol=0)
    assert not dirs.vectors[0][0][2].any()
    assert abs(dirs.cosine()) < 0.5


def test_layer_and_no_normalization():
    model = mlp()
    layer = random_directions(model, 1, "layer", seed=2)
    none = random_directions(model, 1, "none", seed=2)
    named = dict(model.named_parameters())
    for name, dl, dn in zip(layer.names, layer.vectors[0], none.vectors[0]):
        torch.testing.assert_close(dl.norm(), named[name].detach().norm(), rtol=1e-5, atol=0)
        # same draw, only rescaled per tensor
        torch.testing.assert_close(dl, dn * (named[name].norm() / dn.norm()).detach(), rtol=1e-5, atol=1e-7)
    rows = layer.vectors[0][0].norm(dim=1) / named["1.weight"].detach().norm(dim=1)
    assert rows.std() > 1e-3  # layer normalization is not per filter


def test_biases_and_batchnorm_excluded_by_default():
    model = mlp(bn=True)
    x, y = data()
    dirs = random_directions(model, 2, "filter", seed=0)
    assert dirs.names == ["1.weight", "4.weight"]
    full = dirs.full(model, 0)
    assert not full["1.bias"].any() and not full["2.weight"].any() and not full["2.bias"].any()
    fixed = {n: p.detach().clone() for n, p in model.named_parameters() if n not in dirs.names}
    buffers = {n: b.clone() for n, b in model.named_buffers()}
    seen = []

    def check(m, args):  # runs at every grid point
        for n, p in model.named_parameters():
            if n in fixed:
                seen.append(torch.equal(p, fixed[n]))

    model[4].register_forward_pre_hook(check)
    evaluate_grid(model, dirs, x, y, F.cross_entropy, "classes", grid_axis(-1, 1, 3), grid_axis(-1, 1, 3))
    assert len(seen) >= 9 * len(fixed) and all(seen)
    for n, b in model.named_buffers():
        assert torch.equal(b, buffers[n]), n  # eval mode: running stats untouched
    with_bias = random_directions(model, 2, "filter", seed=0, include_bias=True)
    assert set(with_bias.names) == {n for n, _ in model.named_parameters()}
    assert [n for n, _ in perturbed_parameters(model)] == ["1.weight", "4.weight"]


def test_seeded_directions_reproducible():
    model = mlp()
    a = random_directions(model, 2, "filter", seed=5)
    b = random_directions(model, 2, "filter", seed=5)
    c = random_directions(model, 2, "filter", seed=6)
    for k in range(2):
        for u, v in zip(a.vectors[k], b.vectors[k]):
            assert torch.equal(u, v)
    assert not torch.equal(a.vectors[0][0], c.vectors[0][0])
    assert not torch.equal(a.vectors[0][0], a.vectors[1][0])


def test_paper_wn_stored_parameters_perturbed_and_restored():
    model = apply_paper_wn(mlp(), None)
    x, y = data()
    before = snapshot(model)
    dirs = random_directions(model, 2, "filter", seed=0)
    assert "1.parametrizations.weight.original" in dirs.names and "1.parametrizations.weight.0.g" in dirs.names
    g = evaluate_grid(model, dirs, x, y, F.cross_entropy, "classes", grid_axis(-1, 1, 3), grid_axis(-1, 1, 3))
    assert np.isfinite(g.loss).all()
    assert_same_state(model, before)


# ----------------------------------------------------------------------------- first-layer reuse


class ScaledInput(nn.Module):
    """The first Linear layer's input depends on a perturbed parameter: reuse must be refused."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.full((6,), 1.5))
        self.fc1, self.fc2 = nn.Linear(6, 8), nn.Linear(8, 3)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x * self.scale)))


@pytest.mark.parametrize(
    "model_fn",
    [
        lambda: mlp(bn=True),
        ScaledInput,
        lambda: nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 16, 3)),
    ],
)
def test_first_layer_reuse_equals_direct_evaluation(model_fn):
    torch.manual_seed(0)
    model = model_fn()
    x, y = data()
    if isinstance(model[0] if isinstance(model, nn.Sequential) else None, nn.Conv2d):
        x = torch.randn(64, 1, 6, 6)
    dirs = random_directions(model, 2, "filter", seed=1, include_bias=True)
    a = grid_axis(-1, 1, 5)
    fast = evaluate_grid(model, dirs, x, y, F.cross_entropy, "classes", a, a, batch_size=24)
    slow = evaluate_grid(model, dirs, x, y, F.cross_entropy, "classes", a, a, batch_size=24, reuse_first_layer=False)
    np.testing.assert_allclose(fast.loss, slow.loss, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(fast.acc, slow.acc)
    assert fast.first_layer_reused == (not isinstance(model, ScaledInput)) and not slow.first_layer_reused


# ----------------------------------------------------------------------------- resume


def test_resume_computes_only_remaining_rows(tmp_path):
    model = mlp()
    x, y = data()
    dirs = random_directions(model, 2, "filter", seed=0)
    a, b = grid_axis(-1, 1, 6), grid_axis(-1, 1, 5)
    state = tmp_path / "state.npz"
    k = 2

    def stop_after_k(i, n):
        if i == k - 1:
            raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        evaluate_grid(model, dirs, x, y, F.cross_entropy, "classes", a, b, state_path=state, on_unit=stop_after_k)
    rows_done = []
    resumed = evaluate_grid(
        model, dirs, x, y, F.cross_entropy, "classes", a, b, state_path=state, on_unit=lambda i, n: rows_done.append(i)
    )
    full = evaluate_grid(model, dirs, x, y, F.cross_entropy, "classes", a, b)
    assert resumed.resumed == k * 6 and resumed.evaluated == (5 - k) * 6
    assert rows_done == list(range(k, 5))
    np.testing.assert_array_equal(resumed.loss, full.loss)
    np.testing.assert_array_equal(resumed.acc, full.acc)
    again = evaluate_grid(model, dirs, x, y, F.cross_entropy, "classes", a, b, state_path=state)
    assert again.evaluated == 0 and again.resumed == 30
    other = random_directions(model, 2, "filter", seed=1)  # different directions: start over
    fresh = evaluate_grid(model, other, x, y, F.cross_entropy, "classes", a, b, state_path=state)
    assert fresh.resumed == 0 and fresh.evaluated == 30


# ----------------------------------------------------------------------------- writers


def test_vtp_well_formed_counts_and_values():
    alphas, betas = np.array([0.0, 1.0, 2.0]), np.array([-1.0, 0.5])
    z = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 7.0]])
    root = ET.fromstring(vtp_text(alphas, betas, z))
    assert root.tag == "VTKFile" and root.get("type") == "PolyData"
    piece = root.find("PolyData/Piece")
    assert piece.get("NumberOfPoints") == "6" and piece.get("NumberOfPolys") == "2"

    def arr(path, name=None):
        for el in root.iterfind(path):
            if name is None or el.get("Name") == name:
                return np.array(el.text.split(), dtype=float)
        raise AssertionError(path)

    pts = arr("PolyData/Piece/Points/DataArray").reshape(-1, 3)
    np.testing.assert_array_equal(pts[:, 2], z.ravel())
    np.testing.assert_array_equal(pts[4], [1.0, 0.5, 5.0])
    np.testing.assert_array_equal(arr("PolyData/Piece/PointData/DataArray", "zvalue"), z.ravel())
    conn = arr("PolyData/Piece/Polys/DataArray", "connectivity").astype(int).reshape(-1, 4)
    np.testing.assert_array_equal(conn, [[0, 1, 4, 3], [1, 2, 5, 4]])
    np.testing.assert_array_equal(arr("PolyData/Piece/Polys/DataArray", "offsets"), [4, 8])
    np.testing.assert_allclose(arr("PolyData/Piece/CellData/DataArray", "averaged zvalue"), [3.0, 4.25])


def test_npz_metadata_round_trip(tmp_path):
    model = mlp()
    x, y = data()
    cfg = LandscapeConfig(resolution=3, examples=40, range=(-0.5, 0.5), seed=4)
    res = landscape_for_model(
        model, x, y, F.cross_entropy, "classes", cfg, tmp_path, meta={"run_hash": "abc", "step": 12}, plots=False
    )
    z = read_npz(res.files["npz"])
    m = z["meta"]
    assert m["range"] == [-0.5, 0.5] and m["resolution"] == 3 and m["examples"] == 40 and m["seed"] == 4
    assert m["split"] == "train" and m["normalization"] == "filter" and m["directions"] == "random"
    assert m["include_bias"] is False and m["run_hash"] == "abc" and m["step"] == 12
    assert math.isclose(m["cosine"], res.directions.cosine())
    np.testing.assert_array_equal(z["loss"], res.grid.loss)
    np.testing.assert_array_equal(z["betas"], grid_axis(-0.5, 0.5, 3))
    assert (tmp_path / "landscape.vtp").exists() and (tmp_path / "landscape_log.vtp").exists()
    log = ET.parse(tmp_path / "landscape_log.vtp").getroot()
    zlog = np.array(log.find("PolyData/Piece/PointData/DataArray").text.split(), dtype=float)
    np.testing.assert_allclose(zlog, np.log(res.grid.loss.ravel() + 0.1), rtol=1e-8)


def test_hdf5_has_the_landscape_libraries_layout(tmp_path, monkeypatch):
    """X, Y meshgrids and losses as losscape's data.h5 (X[i, j] = alpha_j, Y[i, j] = beta_i,
    losses[i, j] the loss there), read back with h5py; without h5py nothing is written."""
    h5py = pytest.importorskip("h5py", reason="h5py is in the test extra; install .[test]")
    model = mlp()
    x, y = data()
    cfg = LandscapeConfig(resolution=4, examples=40, range=(-0.5, 0.5), seed=1)
    res = landscape_for_model(model, x, y, F.cross_entropy, "classes", cfg, tmp_path, meta={"step": 3}, plots=False)
    with h5py.File(res.files["h5"], "r") as f:
        X, Y, losses = f["X"][()], f["Y"][()], f["losses"][()]
        meta = json.loads(f.attrs["meta"])
    axis = grid_axis(-0.5, 0.5, 4)
    np.testing.assert_array_equal(X[2], axis)
    np.testing.assert_array_equal(Y[:, 1], axis)
    assert X.shape == Y.shape == losses.shape == (4, 4)
    np.testing.assert_array_equal(losses, res.grid.loss)  # grid.loss[i, j]: beta_i, alpha_j
    assert meta["step"] == 3 and meta["resolution"] == 4
    import builtins

    real_import = builtins.__import__

    def no_h5py(name, *a, **k):
        if name == "h5py":
            raise ImportError("no h5py")
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_h5py)
    out = tmp_path / "without"
    res = landscape_for_model(model, x, y, F.cross_entropy, "classes", cfg, out, plots=False)
    assert "h5" not in res.files and not (out / "landscape.h5").exists()


# ----------------------------------------------------------------------------- PCA


def test_pca_recovers_plane_of_planar_trajectory():
    g = torch.Generator().manual_seed(0)
    shapes = [(4, 5), (5,), (3, 4)]
    final = [torch.randn(s, generator=g, dtype=torch.float64) for s in shapes]
    P = sum(math.prod(s) for s in shapes)
    u, v = torch.randn(P, generator=g, dtype=torch.float64), torch.randn(P, generator=g, dtype=torch.float64)
    ab = torch.randn(9, 2, generator=g, dtype=torch.float64) * 3
    base = torch.cat([t.reshape(-1) for t in final])
    snaps = []
    for a, b in ab:
        flat = base + a * u + b * v
        parts, off = [], 0
        for s in shapes:
            parts.append(flat[off : off + math.prod(s)].reshape(s))
            off += math.prod(s)
        snaps.append(parts)
    dirs, res = pca_directions(final, snaps, 2)
    V = torch.stack([torch.cat([t.reshape(-1) for t in d]) for d in dirs])
    torch.testing.assert_close(V @ V.T, torch.eye(2, dtype=torch.float64))
    proj = V.T @ V
    torch.testing.assert_close(proj @ u, u)  # the plane is recovered
    torch.testing.assert_close(proj @ v, v)
    assert res.residual_total < 1e-10 and float(res.residual.max()) < 1e-10
    assert abs(float(res.explained.sum()) - 1) < 1e-10
    diffs = torch.stack([torch.cat([t.reshape(-1) for t in s]) - base for s in snaps])
    torch.testing.assert_close(res.coords @ V, diffs)  # coordinates reconstruct the trajectory
    assert res.coords[0, 0] >= 0 and res.coords[0, 1] >= 0

    # A third component: the residual is the part of the variance the plane misses.
    noisy = diffs + 0.05 * torch.randn(9, P, generator=g, dtype=torch.float64)
    rows = [
        [
            (base + r)[off : off + math.prod(s)].reshape(s)
            for s, off in zip(shapes, np.cumsum([0] + [math.prod(s) for s in shapes])[:-1])
        ]
        for r in noisy
    ]
    _, res3 = pca_directions(final, rows, 2)
    sv = torch.linalg.svdvals(noisy) ** 2
    assert abs(res3.residual_total - float(sv[2:].sum() / sv.sum())) < 1e-10
    assert res3.residual_total > 0


def test_pca_degenerate_trajectory_is_an_error():
    final = [torch.zeros(3, 3)]
    with pytest.raises(ValueError, match="fewer than 2"):
        pca_directions(final, [[torch.ones(3, 3)], [2 * torch.ones(3, 3)]], 2)


# ----------------------------------------------------------------------------- run level


def test_parse_landscape_overrides():
    cfg = parse_landscape_overrides(["dims=1", "analysis.landscape.range=[-2,3]", "directions=pca", "resolution=5"])
    assert cfg.dims == 1 and cfg.range == (-2.0, 3.0) and cfg.directions == "pca" and cfg.resolution == 5
    with pytest.raises(ConfigError, match=r"analysis\.landscape\.resolutionn"):
        parse_landscape_overrides(["resolutionn=5"])
    with pytest.raises(ConfigError, match=r"analysis\.landscape\.normalization"):
        parse_landscape_overrides(["normalization=bogus"])


def test_landscape_for_run_end_to_end(tmp_path):
    import matplotlib.image as mpimg

    from reglab.train import run

    res = run(small_config(tmp_path, "train.snapshot_every=1"))
    cfg = parse_landscape_overrides(["directions=pca", "resolution=5", "examples=128", "range=[-3,3]"])
    out = landscape_for_run(res.path, cfg)
    assert out == res.path / "analysis" / "landscape"
    for name in ["landscape.npz", "landscape.vtp", "landscape_log.vtp", "contour.png", "surface.png"]:
        assert (out / name).stat().st_size > 0, name
    for name in ["contour.png", "surface.png"]:
        img = mpimg.imread(out / name)
        assert img.ndim == 3 and img.shape[0] > 300 and img.shape[1] > 300 and img.std() > 0.01
    z = read_npz(out / "landscape.npz")
    m = z["meta"]
    assert z["trajectory"].shape == (3, 2) and len(z["trajectory_steps"]) == 3  # steps 0, 8, 16
    assert m["run_hash"] == res.hash and m["directions"] == "pca" and m["normalization_applied"] == "none"
    assert 0 <= m["pca_residual_total"] <= 1 and len(m["pca_residuals"]) == 3
    assert abs(m["cosine"]) < 1e-8
    # The final snapshot is the final weights: its coordinates are 0.
    np.testing.assert_allclose(z["trajectory"][-1], 0, atol=1e-5)
    assert m["trajectory_inside_range"] == bool((np.abs(z["trajectory"]) <= 3).all())
    assert m["points_evaluated"] == 25
    again = landscape_for_run(res.path, cfg)  # finished grid: nothing recomputed
    assert read_npz(again / "landscape.npz")["meta"]["points_evaluated"] == 0

    one = landscape_for_run(
        res.path,
        parse_landscape_overrides(["dims=1", "resolution=7", "split=test", "examples=100"]),
        out_dir=tmp_path / "line",
    )
    assert mpimg.imread(one / "line.png").shape[0] > 300
    assert read_npz(one / "landscape.npz")["loss"].shape == (7,)


def test_pca_without_snapshots_is_a_config_error(tmp_path):
    from reglab.train import run

    res = run(small_config(tmp_path, "train.epochs=1"))
    with pytest.raises(ConfigError, match="snapshot_every") as e:
        landscape_for_run(res.path, parse_landscape_overrides(["directions=pca"]))
    assert e.value.field == "analysis.landscape.directions"
    with pytest.raises(ConfigError, match="validation"):
        landscape_for_run(res.path, parse_landscape_overrides(["split=val"]))
