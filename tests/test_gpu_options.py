"""The GPU path's options, checked on the CPU: train.precision (bf16 autocast), train.channels_last,
train.deterministic, the singular-value solver `auto`, and the vectorization rule per device."""

from __future__ import annotations

import json
import math
from collections import namedtuple
from pathlib import Path

import pytest
import torch

from fixtures_data import make_mnist_arrays, write_mnist_folder
from helpers import small_config
from reglab.build import prepare
from reglab.config import config_hash
from reglab.errors import ConfigError
from reglab.loop import OneModelStep
from reglab.observers import RunObserver, StopTraining
from reglab.regularizers.nuclear import HOST_EIGH_MAX, auto_route, gram_nuclear_norm, nuclear_norm_of
from reglab.runtime import CUBLAS_WORKSPACE, deterministic_algorithms, request_deterministic_cublas
from reglab.train import run
from reglab.vectorized import grouping
from reglab.vectorized.grouping import plan_groups, why_not_vectorized

REGS = "regularizers=[{name: nuclear_norm, lam: 0.01}, {name: l2, lam: 0.001}]"


def cli(*args: str):
    from click.testing import CliRunner

    from reglab.cli import cli as reglab_cli

    return CliRunner().invoke(reglab_cli, list(args), catch_exceptions=False)


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def without_time(rs: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "time"} for r in rs]


# ----------------------------------------------------------------------------- config


def test_the_new_fields_at_their_defaults_keep_every_hash(tmp_path):
    base = config_hash(small_config(tmp_path))
    same = small_config(tmp_path, "train.precision=fp32", "train.channels_last=false", "train.deterministic=false")
    assert config_hash(same) == base
    for other in ("train.precision=bf16", "train.deterministic=true"):
        assert config_hash(small_config(tmp_path, other)) != base


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ("train.precision=fp16", "train.precision"),
        ("train.channels_last=sometimes", "train.channels_last"),
        ("train.deterministic=maybe", "train.deterministic"),
        ("train.channels_last=true", "train.channels_last"),  # an MLP: refused when the run is built
        ("regularizers=[{name: gradient_norm, lam: 0.1}]", "train.precision"),  # with precision bf16
    ],
)
def test_bad_values_are_one_line_config_errors(tmp_path, override, field):
    out = tmp_path / "out"
    extra = ["train.precision=bf16"] if override.startswith("regularizers") else []
    r = cli(
        "train", "data.dataset=digits", "model.widths=[64,8,10]", "train.epochs=1", *extra, override, "-o", str(out)
    )
    assert r.exit_code == 2, r.output
    msg = r.output.strip()
    assert msg.startswith(f"error: {field}: ") and "\n" not in msg and "Traceback" not in msg, msg
    assert not out.exists() or not any(p.is_file() for p in out.rglob("*"))


# ----------------------------------------------------------------------------- bf16


def test_bf16_runs_the_forward_in_bfloat16_and_the_penalties_in_float32(tmp_path):
    s = prepare(small_config(tmp_path, "train.precision=bf16", REGS))
    ref = prepare(small_config(tmp_path, REGS))  # fp32, same seed: same initial weights
    for (_, a), (_, b) in zip(s.model.state_dict().items(), ref.model.state_dict().items()):
        assert torch.equal(a, b)
    want = [float(t.reg.penalty(ref.model, None).detach()) for t in ref.terms]
    x, y = s.data.x_train[:32], s.data.y_train[:32]
    with torch.no_grad():
        fp32_loss = float(ref.loss_fn(ref.model(x), y))
    res = OneModelStep(s).train_on(x, y, 0, 0)
    assert res.outputs[0].dtype == torch.bfloat16  # the forward ran under autocast
    assert res.data_loss.dtype == torch.float32 and res.log_values.dtype == torch.float32
    got = res.log_values[0].tolist()
    assert got[2:] == want  # each penalty exactly as fp32 computes it on the same weights
    assert got[0] != fp32_loss and got[0] == pytest.approx(fp32_loss, rel=2e-2)
    assert got[1] == pytest.approx(got[0] + 0.01 * want[0] + 0.001 * want[1], rel=1e-6)
    for p in s.model.parameters():  # master weights and their optimizer state stay float32
        assert p.dtype == torch.float32 and p.grad is not None and p.grad.dtype == torch.float32
    assert all(
        v.dtype == torch.float32 for st in s.optimizer.state.values() for v in st.values() if v.is_floating_point()
    )


def test_a_bf16_run_trains_and_its_rows_are_finite(tmp_path):
    res = run(small_config(tmp_path, "train.precision=bf16", "train.epochs=6", REGS))
    assert res.status == "done"
    steps = rows(res.path / "steps.jsonl")
    assert all(math.isfinite(v) for r in steps for k, v in r.items() if isinstance(v, float))
    evals = rows(res.path / "evals.jsonl")
    assert evals[-1]["train_loss"] < 0.8 * evals[0]["train_loss"]
    (seg,) = res.summary["trained_by"]
    assert seg["precision"] == "bf16" and seg["dtype"] == "float32" and seg["deterministic"] is False


class StopAt(RunObserver):
    def __init__(self, step: int):
        self.step = step

    def on_evaluation(self, row: dict) -> None:
        if row["step"] == self.step:
            raise StopTraining(f"stopped at {self.step}")


def test_a_resumed_bf16_run_is_exact(tmp_path):
    cfg = ["train.precision=bf16", "train.epochs=4", "optim.momentum=0.9", REGS]
    whole = run(small_config(tmp_path / "whole", *cfg))
    # 8 steps an epoch; the evaluation at step 24 stops the run, which saves a resume point there
    first = run(small_config(tmp_path / "parts", *cfg), observers=[StopAt(24)])
    assert first.status == "stopped"
    again = run(small_config(tmp_path / "parts", *cfg))
    assert again.status == "done" and [s["from_step"] for s in again.summary["trained_by"]] == [0, 24]
    for name in ("steps.jsonl", "evals.jsonl"):
        assert without_time(rows(again.path / name)) == without_time(rows(whole.path / name)), name
    a = torch.load(whole.path / "checkpoints" / "final.pt", weights_only=True)["model"]
    b = torch.load(again.path / "checkpoints" / "final.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_bf16_is_refused_where_autocast_cannot_run_it():
    from reglab.build import _check_autocast

    _check_autocast(torch.device("cpu"))
    with pytest.raises(ConfigError, match=r"^train\.precision: bf16 is not available on meta"):
        _check_autocast(torch.device("meta"))


def test_bf16_never_trains_in_a_vectorized_group(tmp_path):
    from reglab.vectorized.trainer import GroupStep

    cfg = small_config(tmp_path, "train.precision=bf16")
    why = why_not_vectorized(cfg, auto=False)  # a reason --vectorize on keeps
    assert why is not None and why.startswith("train.precision: bf16")
    with pytest.raises(ValueError, match=r"train\.precision"):
        GroupStep([prepare(cfg), prepare(cfg.model_copy(update={"seed": 1}))])


# ----------------------------------------------------------------------------- channels_last


@pytest.fixture
def mnist_dir(tmp_path) -> Path:
    data = tmp_path / "data"
    write_mnist_folder(data / "MNIST" / "raw", make_mnist_arrays(64, 20, seed=3), gz=False)
    return data


def conv_config(tmp_path, data: Path, *overrides: str):
    return small_config(
        tmp_path,
        "data.dataset=mnist",
        f"data.dir={data}",
        "model.name=hardernet",
        "model.widths=null",
        "model.width_multiplier=0.25",
        "train.batch_size=16",
        "train.epochs=2",
        "optim.lr=0.05",
        "analysis.margins=false",
        "analysis.spectra=false",
        "analysis.sparsity=false",
        *overrides,
    )


def test_channels_last_holds_the_weights_and_batches_in_that_layout(tmp_path, mnist_dir):
    s = prepare(conv_config(tmp_path, mnist_dir, "train.channels_last=true"))
    convs = [m for m in s.model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(c.weight.is_contiguous(memory_format=torch.channels_last) for c in convs)
    assert not all(c.weight.is_contiguous() for c in convs)  # really moved, not trivially both
    assert s.data.x_train.is_contiguous(memory_format=torch.channels_last)
    step = OneModelStep(s)
    step.begin_epoch([torch.randperm(s.data.x_train.shape[0])])
    step.step(0, 0, 0, [True])
    assert all(c.weight.is_contiguous(memory_format=torch.channels_last) for c in convs)  # after the update too
    assert s.as_input(s.data.x_train[:3].contiguous()).is_contiguous(memory_format=torch.channels_last)


def test_channels_last_computes_what_contiguous_computes(tmp_path, mnist_dir):
    plain = run(conv_config(tmp_path / "a", mnist_dir))
    last = run(conv_config(tmp_path / "b", mnist_dir, "train.channels_last=true"))
    assert plain.hash != last.hash and plain.status == last.status == "done"
    for name in ("steps.jsonl", "evals.jsonl"):
        want, got = without_time(rows(plain.path / name)), without_time(rows(last.path / name))
        assert [sorted(r) for r in got] == [sorted(r) for r in want]
        for w, g in zip(want, got):
            for k, v in w.items():
                assert g[k] == pytest.approx(v, rel=1e-4, abs=1e-6), (name, k)


def test_channels_last_is_refused_for_an_mlp_and_in_groups(tmp_path, mnist_dir):
    with pytest.raises(ConfigError, match=r"^train\.channels_last: model mlp has no 2-D convolutions"):
        prepare(small_config(tmp_path, "train.channels_last=true"))
    why = why_not_vectorized(conv_config(tmp_path, mnist_dir, "train.channels_last=true"), auto=False)
    assert why is not None and why.startswith("train.channels_last")


# ----------------------------------------------------------------------------- deterministic


class Flags(RunObserver):
    def __init__(self):
        self.seen: list[tuple] = []

    def on_steps(self, rows: list[dict]) -> None:
        cudnn = torch.backends.cudnn
        self.seen.append(
            (
                torch.are_deterministic_algorithms_enabled(),
                torch.is_deterministic_algorithms_warn_only_enabled(),
                cudnn.deterministic,
                cudnn.benchmark,
            )
        )


def test_deterministic_is_applied_while_training_and_recorded(tmp_path):
    before = torch.are_deterministic_algorithms_enabled()
    flags = Flags()
    res = run(small_config(tmp_path, "train.deterministic=true"), observers=[flags])
    assert flags.seen and set(flags.seen) == {(True, False, True, False)}
    (seg,) = res.summary["trained_by"]
    assert seg["deterministic"] is True and seg["precision"] == "fp32"
    assert torch.are_deterministic_algorithms_enabled() == before  # the process's setting is back
    plain = run(small_config(tmp_path, "seed=1"), observers=[off := Flags()])
    assert plain.summary["trained_by"][0]["deterministic"] is False and {s[0] for s in off.seen} == {False}


def test_deterministic_cublas_workspace_on_cuda_only(monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    request_deterministic_cublas(torch.device("cpu"))
    assert "CUBLAS_WORKSPACE_CONFIG" not in __import__("os").environ
    with deterministic_algorithms(True, torch.device("cuda")):  # flags only: nothing runs on the device
        assert torch.are_deterministic_algorithms_enabled()
    assert __import__("os").environ["CUBLAS_WORKSPACE_CONFIG"] == CUBLAS_WORKSPACE
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":16:8")  # the user's own choice is kept
    request_deterministic_cublas(torch.device("cuda"))
    assert __import__("os").environ["CUBLAS_WORKSPACE_CONFIG"] == ":16:8"


# ----------------------------------------------------------------------------- solver auto


def test_auto_solver_rule_per_device():
    cpu = torch.device("cpu")
    assert auto_route(cpu, 128) == ("gram", None)
    assert auto_route(torch.device("cuda"), 128) == ("gram", cpu)
    assert auto_route(torch.device("cuda:1"), HOST_EIGH_MAX) == ("gram", cpu)
    assert auto_route(torch.device("cuda"), HOST_EIGH_MAX + 1) == ("gram", None)
    assert auto_route(torch.device("mps"), 4096) == ("gram", cpu)


@pytest.mark.parametrize("shape", [(60, 20), (20, 60), (30, 30)], ids=["tall", "wide", "square"])
def test_auto_solver_is_gram_bit_for_bit_on_a_cpu(shape):
    m0 = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    out = {}
    for name, fn in [
        ("gram", lambda m: nuclear_norm_of(m, "gram")),
        ("auto", lambda m: nuclear_norm_of(m, "auto")),
        ("host", lambda m: gram_nuclear_norm(m, torch.device("cpu"))),  # the host-eigh route's code
    ]:
        m = m0.clone().requires_grad_()
        value = fn(m)
        value.backward()
        assert m.grad is not None
        out[name] = (value.detach(), m.grad)
    for name in ("auto", "host"):
        assert torch.equal(out[name][0], out["gram"][0]) and torch.equal(out[name][1], out["gram"][1])


def test_auto_solver_is_an_option_of_the_spectral_penalties(tmp_path):
    cfg = small_config(tmp_path, "regularizers=[{name: nuclear_norm, lam: 0.01, solver: auto}]")
    s = prepare(cfg)
    ref = prepare(small_config(tmp_path, "regularizers=[{name: nuclear_norm, lam: 0.01}]"))
    assert torch.equal(s.terms[0].reg.penalty(s.model, None), ref.terms[0].reg.penalty(ref.model, None))
    with pytest.raises(ConfigError, match=r"regularizers\.0\.solver"):
        small_config(tmp_path, "regularizers=[{name: nuclear_norm, lam: 0.01, solver: fastest}]")


# ----------------------------------------------------------------------------- grouping per device

Planned = namedtuple("Planned", "config hash")


def test_auto_groups_convolutions_on_no_device_until_measured(tmp_path, monkeypatch, mnist_dir):
    convs = [Planned(c, config_hash(c)) for c in (conv_config(tmp_path, mnist_dir, f"seed={i}") for i in range(2))]
    mlps = [Planned(c, config_hash(c)) for c in (small_config(tmp_path, f"seed={i}") for i in range(2))]
    for device in ("cpu", "cuda", "cuda:0", "mps"):
        why = why_not_vectorized(convs[0].config, device=device)
        assert why is not None and "convolutions" in why and "--vectorize on" in why, device
        groups, singles = plan_groups(convs, device=device)
        assert not groups and len(singles) == 2
        groups, _ = plan_groups(convs, auto=False, device=device)  # --vectorize on
        assert [len(g) for g in groups] == [2]
        assert [len(g) for g in plan_groups(mlps, device=device)[0]] == [2]  # MLPs group everywhere
    assert "on cuda" in why_not_vectorized(convs[0].config, device="cuda")  # type: ignore[operator]
    assert "on a CPU" in why_not_vectorized(convs[0].config, device="cpu")  # type: ignore[operator]
    monkeypatch.setitem(grouping.CONVOLUTIONS_VECTORIZE, "cuda", True)  # what a GPU measurement would flip
    assert why_not_vectorized(convs[0].config, device="cuda") is None
    assert [len(g) for g in plan_groups(convs, device="cuda")[0]] == [2]
    assert why_not_vectorized(convs[0].config, device="cpu") is not None
    assert grouping.device_type(convs[0].config.model_copy(update={"device": "cuda:1"})) == "cuda"
