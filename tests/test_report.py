"""The HTML report: sections, embedded figures, the metrics table, missing analyses, run
selection, atomic writing, and a real headless-Chromium render (tests/browser.py)."""

from __future__ import annotations

import base64
import io
import json
import math
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from helpers import small_config
from reglab.errors import UserError
from reglab.report import build_report
from reglab.report.data import make_labels
from reglab.train import run

L2_AUTO = "regularizers=[{name: l2, lam: 1.0e-3, schedule: {name: autol2, every: 2, delay: 0.0}}]"
NO_ANALYSIS = ("analysis.margins=false", "analysis.spectra=false", "analysis.sparsity=false")


# ---------------------------------------------------------------------------------------------
# fixtures: real tiny runs (3 seeds x {no regularizer, l2 with AutoL2}) and fabricated analysis
# ---------------------------------------------------------------------------------------------


def fabricate_analysis(run_dir: Path, i: int) -> None:
    """Tiny stand-ins for the files reglab.analysis writes (format of the run-directory docs)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    a = run_dir / "analysis"
    (a / "landscape").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(i)
    np.savez(
        a / "margins.npz",
        **{f"{sp}/{k}": rng.normal(0.5, 1.0, 50) for sp in ("train", "val", "test") for k in ("raw", "norm_one")},
    )
    layers = [("layers.0", 32, 20), ("layers.1", 4, 32)]
    rows = [
        dict(
            layer=n,
            rows=r,
            cols=c,
            rank_rel=min(r, c) - i % 2,
            rank_numerical=min(r, c),
            effective_rank=0.6 * min(r, c) + 0.1 * i,
            stable_rank=2.0 + 0.1 * i,
            spectral_norm=2.0,
            nuclear_norm=9.0,
            frobenius_norm=3.0,
            step=24,
        )
        for n, r, c in layers
    ]
    pd.DataFrame(rows).to_csv(a / "ranks.csv", index=False)
    with open(a / "ranks_during.jsonl", "w") as fh:
        for step in (0, 12, 24):
            for r in rows:
                fh.write(json.dumps({**r, "step": step, "effective_rank": r["effective_rank"] + 0.01 * step}) + "\n")
    np.savez(a / "singular_values.npz", **{n: np.sort(rng.random(min(r, c)))[::-1] for n, r, c in layers})
    (a / "sparsity.json").write_text(
        json.dumps({"active_units_pct": 100.0 - 3 * i, "active_units": 32 - i, "units": 32})
    )
    al = np.linspace(-1, 1, 5)
    loss = al[:, None] ** 2 + al[None, :] ** 2
    meta = json.dumps({"dims": 2, "directions": "random", "normalization": "filter", "split": "train"})
    np.savez(a / "landscape" / "landscape.npz", alphas=al, betas=al, loss=loss, acc=1 - loss / 4, meta=np.array(meta))
    fig, ax = plt.subplots(figsize=(3, 2.4))
    ax.contour(al, al, loss)
    fig.savefig(a / "landscape" / "contour.png", dpi=60)
    plt.close(fig)


@pytest.fixture(scope="module")
def roots(tmp_path_factory) -> dict:
    """{'plain': root without analysis files, 'full': the same runs with analysis files,
    'runs': {setting: [hashes]}}."""
    plain = tmp_path_factory.mktemp("runs_plain")
    hashes: dict[str, list[str]] = {"none": [], "l2": []}
    for seed in range(3):
        for key, regs in (("none", []), ("l2", [L2_AUTO])):
            cfg = small_config(plain, f"seed={seed}", "train.epochs=3", "data.val_fraction=0.25", *NO_ANALYSIS, *regs)
            r = run(cfg)
            assert r.status == "done"
            hashes[key].append(r.hash)
    # the classification files are always written; nothing else of the analysis
    assert not [p for p in plain.glob("*/analysis/*.npz") if p.name != "misclassified.npz"]
    full = tmp_path_factory.mktemp("runs_full")
    shutil.copytree(plain, full, dirs_exist_ok=True)
    for i, d in enumerate(sorted(p for p in full.iterdir() if p.is_dir())):
        fabricate_analysis(d, i)
    return {"plain": plain, "full": full, "runs": hashes}


@pytest.fixture(scope="module")
def full_report(roots, tmp_path_factory) -> Path:
    return build_report(roots["full"], tmp_path_factory.mktemp("report_full"), title="Test sweep")


class _Parser(HTMLParser):
    def __init__(self):
        super().__init__()
        self.imgs: list[str] = []
        self.sections: list[str] = []
        self.scripts = 0
        self.links: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img":
            self.imgs.append(a.get("src", ""))
        elif tag == "section":
            self.sections.append(a.get("id", ""))
        elif tag == "script":
            self.scripts += 1
        elif tag == "link":
            self.links.append(a.get("href", ""))


def parse(html_path: Path) -> _Parser:
    p = _Parser()
    p.feed(html_path.read_text(encoding="utf-8"))
    return p


def manifest(html_path: Path) -> dict:
    return json.loads((html_path.parent / "report.json").read_text())


# ---------------------------------------------------------------------------------------------
# structure and embedded figures
# ---------------------------------------------------------------------------------------------


def test_report_sections_and_embedded_pngs(full_report: Path):
    p = parse(full_report)
    html = full_report.read_text(encoding="utf-8")
    assert "<title>Test sweep</title>" in html
    for sec in (
        "overview",
        "settings",
        "metrics",
        "curves",
        "lambda",
        "measurements",
        "margins",
        "ranks",
        "sparsity",
        "landscape",
    ):
        assert sec in p.sections, sec
    assert "missing" not in p.sections
    # self-contained: no script, no external resources
    assert p.scripts == 0
    assert "http://" not in html and "https://" not in html
    assert all(link.startswith("data:") for link in p.links)
    figs = manifest(full_report)["figures"]
    names = {f["name"] for f in figs}
    for expected in (
        "curves_loss",
        "curves_acc",
        "final_test_acc",
        "lambda_l2",
        "measurements",
        "margins",
        "ranks",
        "ranks_during",
        "spectra",
        "active_units",
    ):
        assert expected in names, expected
    assert any(n.startswith("landscape_") for n in names)
    assert len(p.imgs) == len(figs)
    for src in p.imgs:
        assert src.startswith("data:image/png;base64,")
        raw = base64.b64decode(src.split(",", 1)[1], validate=True)
        assert raw.startswith(b"\x89PNG\r\n\x1a\n")
        with Image.open(io.BytesIO(raw)) as im:
            im.verify()
        with Image.open(io.BytesIO(raw)) as im:
            assert im.size[0] > 100 and im.size[1] > 100
    # the same figures as files, and every figure has a numbered caption
    for f in figs:
        assert (full_report.parent / f["file"]).stat().st_size > 0
    assert html.count("<figcaption><b>Figure ") == len(figs)
    assert not list(full_report.parent.glob(".report-tmp-*"))


def test_report_overview_and_settings(full_report: Path, roots):
    html = full_report.read_text(encoding="utf-8")
    m = manifest(full_report)
    assert len(m["runs"]) == 6
    labels = [s["label"] for s in m["settings"]]
    assert labels == ["no regularizer", "l2 (autol2) λ₀=0.001"]
    assert sorted(m["settings"][1]["runs"]) == sorted(roots["runs"]["l2"])
    assert "6 finished runs" in html and "2 settings" in html and "seeds: 0, 1, 2" in html
    assert "regularizers.0.lam" in html  # the varying axes are listed
    assert "Configuration common to all runs" in html
    fm = pd.read_csv(full_report.parent / "final_metrics.csv")
    assert list(fm["n"]) == [3, 3]


def test_metrics_match_independent_aggregation(full_report: Path, roots):
    """Mean ± CI in the table equals an independent computation from summary.json files."""
    html = full_report.read_text(encoding="utf-8")
    for key in ("none", "l2"):
        accs = []
        for h in roots["runs"][key]:
            s = json.loads((roots["full"] / h / "summary.json").read_text())
            accs.append(s["final"]["test_acc"])
        a = np.asarray(accs)
        half = 4.303 * a.std(ddof=1) / math.sqrt(len(a))  # t_{0.975, 2}
        assert f"{100 * a.mean():.2f} ± {100 * half:.2f}" in html


# ---------------------------------------------------------------------------------------------
# known numbers: a fabricated results root
# ---------------------------------------------------------------------------------------------


def _fake_run(root: Path, seed: int, lr: float, test_acc: float, status: str = "done") -> str:
    """A run directory with a real config record and made-up logs and summary; returns its hash."""
    from reglab.train import config_record
    from reglab.validation import load_config

    record = config_record(load_config(None, ["name=known", f"seed={seed}", f"optim.lr={lr}"]))
    d = root / record["hash"]
    d.mkdir(parents=True)
    (d / "config.json").write_text(json.dumps(record))
    final = {"step": 10, "epoch": 1.0, "train_loss": 0.5, "train_acc": 0.9, "test_loss": 0.6, "test_acc": test_acc}
    if status == "diverged":
        final = {k: (math.nan if k not in ("step", "epoch") else v) for k, v in final.items()}
    (d / "summary.json").write_text(json.dumps({"status": status, "final": final, "steps": 10, "epochs": 1.0}))
    rows = [
        {
            "step": s,
            "epoch": s / 10,
            "train_loss": 1.0 - 0.05 * s,
            "train_acc": 0.5 + 0.04 * s,
            "test_loss": 1.1 - 0.05 * s,
            "test_acc": test_acc * s / 10,
        }
        for s in range(11)
    ]
    (d / "evals.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if status != "incomplete":
        (d / "DONE").write_text("")
    return record["hash"]


@pytest.fixture
def known_root(tmp_path) -> Path:
    root = tmp_path / "known"
    for i, acc in enumerate((0.80, 0.85, 0.90)):
        _fake_run(root, i, 0.1, acc)
    for i, acc in enumerate((0.70, 0.74, 0.72)):
        _fake_run(root, i, 0.01, acc)
    (root / "diverged").write_text(_fake_run(root, 3, 0.01, 0.0, status="diverged"))
    _fake_run(root, 9, 0.5, 0.1, status="incomplete")
    return root


def test_metrics_table_known_values(known_root, tmp_path):
    out = build_report(known_root, tmp_path / "rep")
    html = out.read_text(encoding="utf-8")
    # lr=0.1: mean 0.85, std 0.05 -> half-width 4.303 * 0.05 / sqrt(3) = 0.124219...
    assert "85.00 ± 12.42" in html
    # lr=0.01: three finished runs (the diverged one left out): mean 0.72, std 0.02 -> 0.049687...
    assert "72.00 ± 4.97" in html
    assert "<title>reglab report: known</title>" in html
    m = manifest(out)
    labels = {s["label"]: s for s in m["settings"]}
    assert set(labels) == {"lr=0.01", "lr=0.1"}
    assert labels["lr=0.01"]["diverged"] == [(known_root / "diverged").read_text()]
    assert "1 run diverged" in html and "⚠ 1" in html
    assert "1 incomplete" in html  # the unfinished run is counted, not drawn
    fm = pd.read_csv(out.parent / "final_metrics.csv").set_index("setting")
    assert fm.loc["lr=0.01", "n"] == 3 and fm.loc["lr=0.01", "diverged"] == 1
    assert fm.loc["lr=0.1", "test_acc_mean"] == pytest.approx(0.85)
    assert fm.loc["lr=0.1", "test_acc_ci95"] == pytest.approx(4.303 * 0.05 / math.sqrt(3), rel=1e-6)
    assert '<span class="setting">' in html  # a setting's label never breaks over two lines


def test_metrics_table_drops_the_diverged_column_when_nothing_diverged(tmp_path):
    root = tmp_path / "calm"
    for i, acc in enumerate((0.80, 0.85, 0.90)):
        _fake_run(root, i, 0.1, acc)
    html = build_report(root, tmp_path / "rep").read_text(encoding="utf-8")
    metrics = html[html.index('<section id="metrics">') :]
    metrics = metrics[: metrics.index("</table>")]
    assert "<th" in metrics and ">diverged<" not in metrics and "no run diverged" in html
    # losses in one positional format: 0.6 ± 0 (identical seeds), never 6.00e-01 styles
    assert "0.6 ± 0" in metrics and "e-0" not in metrics


def test_report_without_analysis_files(roots, tmp_path):
    out = build_report(roots["plain"], tmp_path / "rep")
    p = parse(out)
    html = out.read_text(encoding="utf-8")
    for sec in ("overview", "settings", "metrics", "curves", "missing"):
        assert sec in p.sections
    for sec in ("margins", "ranks", "sparsity", "landscape"):
        assert sec not in p.sections
    assert "analysis/margins.npz" in html and "sections are omitted" in html
    assert len(p.imgs) == len(manifest(out)["figures"]) >= 3


@pytest.mark.slow
def test_report_with_analysis_written_by_the_trainer(tmp_path):
    """The real producers (reglab.analysis via the trainer) and the report agree on the files."""
    root = tmp_path / "runs"
    for seed in range(2):
        for regs in ([], ["regularizers=[{name: pathprox, lam: 0.05}]"]):
            run(small_config(root, f"seed={seed}", "train.epochs=2", "analysis.spectra_every=1", *regs))
    if not list(root.glob("*/analysis/margins.npz")):
        pytest.skip("this trainer does not write analysis files yet")
    out = build_report(root, tmp_path / "rep")
    p = parse(out)
    names = {f["name"] for f in manifest(out)["figures"]}
    assert {"margins", "ranks", "active_units"} <= names
    assert {"margins", "ranks", "sparsity"} <= set(p.sections)
    if list(root.glob("*/analysis/ranks_during.jsonl")):
        assert "ranks_during" in names
    assert len(p.imgs) == len(names)


def test_report_restricted_to_runs(roots, tmp_path):
    chosen = roots["runs"]["l2"]
    out = build_report(roots["plain"], tmp_path / "rep", runs=[h[:8] for h in chosen])
    m = manifest(out)
    assert sorted(m["runs"]) == sorted(chosen)
    assert len(m["settings"]) == 1 and m["settings"][0]["label"] == "all runs"
    assert "3 finished runs" in out.read_text(encoding="utf-8")
    with pytest.raises(UserError, match="no run"):
        build_report(roots["plain"], tmp_path / "rep2", runs=["ffffffffffff"])


def test_report_write_is_atomic(known_root, tmp_path, monkeypatch):
    from reglab.report import figures

    out_dir = tmp_path / "rep"
    first = build_report(known_root, out_dir)
    before = first.read_bytes()

    def boom(d):
        raise RuntimeError("crash while drawing")

    monkeypatch.setattr(figures, "curve_figures", boom)
    with pytest.raises(RuntimeError, match="crash while drawing"):
        build_report(known_root, out_dir, title="second")
    assert first.read_bytes() == before
    assert not list(out_dir.glob(".report-tmp-*"))


def test_labels_are_short_and_distinct():
    axes = ["optim.lr", "regularizers.0.lam", "regularizers.0.name", "regularizers.0.roles"]
    values = [
        {
            "optim.lr": 0.1,
            "regularizers.0.lam": math.nan,
            "regularizers.0.name": math.nan,
            "regularizers.0.roles": math.nan,
        },
        {
            "optim.lr": 0.1,
            "regularizers.0.lam": 0.001,
            "regularizers.0.name": "l2",
            "regularizers.0.roles": ("weight",),
        },
        {
            "optim.lr": 0.01,
            "regularizers.0.lam": 1e-4,
            "regularizers.0.name": "l2_mul",
            "regularizers.0.roles": ("weight",),
        },
    ]
    assert make_labels(values, axes) == ["no regularizer, lr=0.1", "l2 λ=0.001, lr=0.1", "l2_mul λ=0.0001, lr=0.01"]
    # clashing tails keep enough of the dotted name
    labels = make_labels(
        [{"data.seed": 1, "model.seed": 2}, {"data.seed": 3, "model.seed": 2}], ["data.seed", "model.seed"]
    )
    assert labels == ["data.seed=1, model.seed=2", "data.seed=3, model.seed=2"]
    assert make_labels([{}], []) == ["all runs"]
    # schedule options by their last name, switches as on/off (legends of study 3's sweeps)
    axes = [
        "regularizers.0.lam",
        "regularizers.0.schedule.name",
        "regularizers.0.schedule.threshold",
        "model.batch_norm",
    ]
    values = [
        {axes[0]: 0.1, axes[1]: "autol2", axes[2]: 5, axes[3]: False},
        {axes[0]: 0.1, axes[1]: "autol2", axes[2]: 10, axes[3]: True},
    ]
    assert make_labels(values, axes) == [
        "(autol2) λ₀=0.1 threshold=5, batch_norm off",
        "(autol2) λ₀=0.1 threshold=10, batch_norm on",
    ]


def test_many_settings_split_over_figures(tmp_path):
    root = tmp_path / "many"
    for i in range(12):
        _fake_run(root, 0, 0.01 * (i + 1), 0.5 + 0.01 * i)
    out = build_report(root, tmp_path / "rep")
    names = [f["name"] for f in manifest(out)["figures"]]
    assert "curves_loss_part1" in names and "curves_loss_part2" in names
    assert len(manifest(out)["settings"]) == 12


# ---------------------------------------------------------------------------------------------
# the page in a real browser
# ---------------------------------------------------------------------------------------------


def test_report_renders_in_headless_chromium(full_report: Path, tmp_path):
    from browser import find_chromium, render, serve_directory

    binary = find_chromium()  # skips with the install hint when there is no browser
    with serve_directory(full_report.parent) as url:
        page = render(url + "index.html", binary=binary)
    assert page.title == "Test sweep"
    assert page.console_errors == []
    assert page.failed_requests == []
    assert len(page.images) == len(manifest(full_report)["figures"])
    assert page.broken_images == []
    shot = tmp_path / "report.png"
    shot.write_bytes(page.screenshot)
    assert shot.stat().st_size > 0
    with Image.open(shot) as im:
        assert im.format == "PNG"
        assert im.size[0] == 1280 and im.size[1] > 2000  # the whole page, not just the viewport


def test_figure_choices_axes_and_constant_panels():
    """Iteration budgets are plotted against iterations; log axes where values span decades; a
    measurement that never changes gets no panel but a line in the caption; monitors are drawn."""
    from types import SimpleNamespace

    from reglab.report.figures_training import constant_columns, measurement_columns
    from reglab.report.plotting import spans_decades, x_axis

    ev = pd.DataFrame({"run": ["a", "a", "b"], "step": [0, 50, 50], "epoch": [0, 5.0, 5.0]})
    assert x_axis(ev, pd.DataFrame({"train.iterations": [100, 100]})) == ("step", "iteration")
    assert x_axis(ev, pd.DataFrame({"train.iterations": [100, None]})) == ("epoch", "epoch")
    assert x_axis(ev) == ("epoch", "epoch")
    assert spans_decades([2.3, 0.05, 0.01]) and not spans_decades([2.3, 0.5]) and not spans_decades([2.3, 0.0])
    evals = pd.DataFrame(
        {
            "run": ["a", "a", "b", "b"],
            "lam.pathprox": [1e-3] * 4,
            "pathprox.active_units_pct": [100.0] * 4,
            "pathprox.path_norm": [10.0, 8.0, 11.0, 7.5],
            "pathprox.path_norm.fc1-fc2": [5.0, 4.0, 5.0, 4.0],
            "monitor.nuclear_norm": [30.0, 25.0, 31.0, 24.0],
            "monitor.path_energy.energy_total": [0.0, 1.0, 0.0, 2.0],
        }
    )
    d = SimpleNamespace(evals=evals)
    assert constant_columns(d) == {"pathprox.active_units_pct": 100.0}
    assert measurement_columns(d) == ["pathprox.path_norm", "monitor.nuclear_norm", "monitor.path_energy.energy_total"]


def test_figures_also_as_vector_files_at_a_column_width(known_root, tmp_path):
    """--vector pdf --vector svg --width 3.3: every PNG has a PDF and an SVG beside it, the SVG
    drawn about 3.3 inches wide; a later report without --vector removes them."""
    import re

    from click.testing import CliRunner

    from reglab.cli import cli

    r = CliRunner().invoke(
        cli,
        ["report", str(known_root), "-o", str(tmp_path / "r"), "--vector", "pdf", "--vector", "svg", "--width", "3.3"],
    )
    assert r.exit_code == 0, r.output
    figs = tmp_path / "r" / "figures"
    pngs = sorted(p.stem for p in figs.glob("*.png"))
    assert pngs and sorted(p.stem for p in figs.glob("*.pdf")) == pngs == sorted(p.stem for p in figs.glob("*.svg"))
    assert all((figs / f"{n}.pdf").read_bytes().startswith(b"%PDF") for n in pngs)
    width_pt = float(re.search(rb'<svg[^>]*width="([0-9.]+)pt"', (figs / f"{pngs[0]}.svg").read_bytes()).group(1))
    assert 2.5 * 72 < width_pt < 3.6 * 72  # tight bounding box of a 3.3-inch figure
    r = CliRunner().invoke(cli, ["report", str(known_root), "-o", str(tmp_path / "r")])
    assert r.exit_code == 0 and not list(figs.glob("*.pdf")) and not list(figs.glob("*.svg"))
    r = CliRunner().invoke(cli, ["report", str(known_root), "-o", str(tmp_path / "r"), "--width", "3.3"])
    assert r.exit_code == 2 and "--width: sets the size of the vector figures" in r.output


def test_spectrum_histograms_read_the_spectra_and_the_square_layers(tmp_path):
    """The symmetric part's eigenvalues of a square layer against a closed form, and the figures
    present in a report of runs with a square hidden layer."""
    import torch

    from reglab.report.figures_histograms import _square_weights

    ck = tmp_path / "run" / "checkpoints"
    ck.mkdir(parents=True)
    w = torch.tensor([[2.0, 1.0], [3.0, 4.0]])  # (W + W^T)/2 = [[2, 2], [2, 4]]: eigenvalues 3 -+ sqrt(5)
    torch.save({"model": {"fc.weight": w, "out.weight": torch.ones(3, 2), "fc.bias": torch.zeros(2)}}, ck / "final.pt")
    sq = _square_weights(tmp_path / "run")
    assert list(sq) == ["fc"]
    eig = np.linalg.eigvalsh((sq["fc"] + sq["fc"].T) / 2)
    np.testing.assert_allclose(eig, [3 - math.sqrt(5), 3 + math.sqrt(5)])
    root = tmp_path / "runs"
    for seed in (0, 1):
        run(small_config(root, f"seed={seed}", "model.widths=[20,16,16,4]", "analysis.margins=false"))
    build_report(root, tmp_path / "report")
    figs = {p.stem for p in (tmp_path / "report" / "figures").glob("*.png")}
    assert {"spectra_hist", "spectra_sym_hist"} <= figs
