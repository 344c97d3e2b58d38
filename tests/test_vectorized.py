"""The vectorized group trainer against the one-by-one trainer (reglab.train.run).

Tolerance: every number in steps.jsonl and evals.jsonl (except wall-clock `time`) agrees with
the one-by-one run within rtol 1e-5, atol 1e-6 after 16-32 float32 steps (vmap and the stacked
optimizer change reduction order and fused multiply-adds: measured differences are ~3e-7
relative). Integers, lambda values and schedule decisions must match exactly in structure
(same rows, same keys).
"""

from __future__ import annotations

import math

import pytest
import torch

from helpers import _Fault, small_config
from reglab.config import config_hash
from reglab.regularizers import REGULARIZERS
from reglab.store import RunDir
from reglab.sweep.grid import PlannedRun
from reglab.train import run
from reglab.vectorized import describe_plan, grouping, plan_groups, train_group
from regularizer_cases import REGULARIZER_CASES

RTOL, ATOL = 1e-5, 1e-6
NO_ANALYSIS = ["analysis.margins=false", "analysis.spectra=false", "analysis.sparsity=false"]


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models: one thread is faster than two on a shared, loaded machine (both paths of a
    comparison run under the same setting)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(autouse=True)
def _reset_faults():
    _Fault.nan_at = _Fault.raise_at = None
    yield
    _Fault.nan_at = _Fault.raise_at = None


def planned(tmp_path, variants, *common):
    """PlannedRuns from (seed, lr, lam) triples; LAM in the common overrides is replaced."""
    out = []
    for seed, lr, lam in variants:
        cfg = small_config(tmp_path, f"seed={seed}", f"optim.lr={lr}", *[c.replace("LAM", repr(lam)) for c in common])
        out.append(PlannedRun(cfg, config_hash(cfg)))
    return out


def assert_rows_close(a: list[dict], b: list[dict], where: str) -> None:
    assert len(a) == len(b), f"{where}: {len(a)} rows vs {len(b)}"
    for ra, rb in zip(a, b):
        assert ra.keys() == rb.keys(), f"{where}: keys differ {set(ra) ^ set(rb)}"
        for k in ra:
            if k == "time":
                continue
            va, vb = ra[k], rb[k]
            if isinstance(va, float) and isinstance(vb, float) and not (math.isfinite(va) and math.isfinite(vb)):
                assert (math.isnan(va) and math.isnan(vb)) or va == vb, (
                    f"{where} step {ra.get('step')} {k}: {va} vs {vb}"
                )
            elif isinstance(va, (int, float)) and not isinstance(va, bool):
                assert va == pytest.approx(vb, rel=RTOL, abs=ATOL), f"{where} step {ra.get('step')} {k}: {va} vs {vb}"
            else:
                assert va == vb, f"{where} step {ra.get('step')} {k}"


def compare_group_with_alone(tmp_path, runs, statuses=None) -> list[dict]:
    res = train_group(runs, tmp_path / "group")
    assert [r["status"] for r in res] == (statuses or ["done"] * len(runs)), res
    for r in runs:
        run(r.config, root=tmp_path / "alone")
    for r in runs:
        g, a = RunDir(tmp_path / "group" / r.hash), RunDir(tmp_path / "alone" / r.hash)
        assert_rows_close(g.steps(), a.steps(), f"{r.hash} steps")
        assert_rows_close(g.evals(), a.evals(), f"{r.hash} evals")
        sg, sa = g.read_summary(), a.read_summary()
        assert sg["status"] == sa["status"] and sg["steps"] == sa["steps"]
        fg = torch.load(g.ckpt("final"), weights_only=True)["model"]
        fa = torch.load(a.ckpt("final"), weights_only=True)["model"]
        for k in fa:
            torch.testing.assert_close(fg[k], fa[k], rtol=1e-4, atol=1e-5, equal_nan=True)
    return res


# (regularizers, settings): every regularizer that vectorizes under its row's settings
# (tests/regularizer_cases.py; lr_scale = its lr over the variants' base 0.1), then combinations
# (SGD with momentum 0 and 0.9, Nesterov once, Adam spread over them).
CASES = {
    name: ("[" + case.term + "]", [*case.overrides, f"optim.lr_scale={round(case.lr / 0.1, 12)!r}"])
    for name, case in REGULARIZER_CASES.items()
    if REGULARIZERS.get(name).vectorizes
}
CASES |= {
    "none": ("[]", ["optim.momentum=0.9"]),
    "l2_adam": ("[{name: l2, lam: LAM}]", ["optim.name=adam", "optim.lr_scale=0.1"]),
    # Rho-WN's output scale is a parameter on the model applied by a forward hook
    "l2_mul_rho_wn": ("[{name: l2_mul, lam: LAM}]", ["model.weight_norm=rho", "model.wn_g0=1.2"]),
    "path_energy_bias": ("[{name: path_energy, lam: LAM, roles: [weight, bias]}]", []),
    # two terms, one with a prox step: both trainers apply prox and after-step hooks in one order
    "path_energy_then_pathprox": ("[{name: path_energy, lam: LAM}, {name: pathprox, lam: LAM}]", []),
    "pathprox_wd": ("[{name: pathprox, lam: LAM, algorithm: weight_decay}]", ["optim.momentum=0.9"]),
    # amortized spectral penalties: the cached factors are per-model state, refreshed per model
    # after the step (by the cadence, and early by each model's own weight change)
    "nuclear_norm_refresh": ("[{name: nuclear_norm, lam: LAM, refresh_every: 3}]", ["optim.momentum=0.9"]),
    "spectral_energy_refresh_tol": (
        "[{name: spectral_energy, lam: LAM, refresh_every: 5, refresh_tol: 0.03}]",
        ["model.widths=[20,32,32,4]"],
    ),
}


def _opt(overrides: list[str], lr: float) -> tuple[float, list[str]]:
    scale = 1.0
    rest = []
    for o in overrides:
        if o.startswith("optim.lr_scale="):
            scale = float(o.split("=")[1])
        else:
            rest.append(o)
    return lr * scale, rest


@pytest.mark.parametrize("case", sorted(CASES))
def test_group_equals_one_by_one(tmp_path, case):
    regs, opt = CASES[case]
    lr0, opt = _opt(opt, 0.1)
    # different seed, learning rate and lambda in one group (lambda 0 included)
    variants = [(0, lr0, 3e-3), (1, lr0 / 2, 3e-2), (2, lr0, 0.0)]
    runs = planned(tmp_path, variants, f"regularizers={regs}", *opt, *NO_ANALYSIS)
    groups, singles = plan_groups(runs)
    assert len(groups) == 1 and len(groups[0]) == 3 and not singles
    compare_group_with_alone(tmp_path, runs)


@pytest.mark.parametrize("case", ["l2", "nuclear_norm", "pathprox", "path_energy"])
def test_one_seed_shares_the_batch_and_equals_one_by_one(tmp_path, case, monkeypatch):
    """Runs of one seed draw one data order: the group feeds every model the same batch."""
    from reglab.vectorized.functional import VmappedStep

    calls = []
    real = VmappedStep.__call__
    monkeypatch.setattr(
        VmappedStep,
        "__call__",
        lambda self, *a, shared=False, **k: (calls.append(shared), real(self, *a, shared=shared, **k))[1],
    )
    regs, opt = CASES[case]
    lr0, opt = _opt(opt, 0.1)
    runs = planned(
        tmp_path, [(4, lr0, 3e-3), (4, lr0 / 2, 3e-2), (4, lr0, 0.0)], f"regularizers={regs}", *opt, *NO_ANALYSIS
    )
    compare_group_with_alone(tmp_path, runs)
    assert calls and all(calls)


@pytest.mark.parametrize("sched", ["autol2", "advance_l2"])
def test_lambda_schedules_per_model(tmp_path, sched):
    regs = f"[{{name: l2, lam: LAM, schedule: {{name: {sched}, every: 2, delay: 0.0}}}}]"
    runs = planned(tmp_path, [(0, 0.1, 0.1), (1, 0.1, 0.3)], f"regularizers={regs}", "train.epochs=4", *NO_ANALYSIS)
    compare_group_with_alone(tmp_path, runs)
    rows = [RunDir(tmp_path / "group" / p.hash).steps() for p in runs]
    lams = [[r["lam.l2"] for r in rs] for rs in rows]
    assert any(len(set(ls)) > 1 for ls in lams), "the schedule never changed lambda: the test would not test it"
    assert lams[0] != lams[1]
    for r in (r for rs in rows for r in rs):  # the logged lambda is the one the step's loss used
        assert r["total_loss"] == pytest.approx(r["loss"] + r["lam.l2"] * r["penalty.l2"], rel=1e-5)


def test_lr_schedule_and_two_regularizers(tmp_path):
    regs = "[{name: l2, lam: LAM}, {name: decoupled_weight_decay, lam: LAM}]"
    runs = planned(
        tmp_path,
        [(0, 0.1, 1e-3), (3, 0.2, 1e-2)],
        f"regularizers={regs}",
        "lr_schedule.name=cosine",
        "lr_schedule.unit=iteration",
        *NO_ANALYSIS,
    )
    compare_group_with_alone(tmp_path, runs)


def test_run_directories_identical_in_structure(tmp_path):
    runs = planned(
        tmp_path,
        [(0, 0.1, 1e-3), (1, 0.1, 1e-2)],
        "regularizers=[{name: pathprox, lam: LAM}]",
        "train.snapshot_every=1",
        "optim.momentum=0.9",
    )
    compare_group_with_alone(tmp_path, runs)
    for r in runs:
        g, a = tmp_path / "group" / r.hash, tmp_path / "alone" / r.hash

        def files(d):
            return sorted(str(p.relative_to(d)) for p in d.rglob("*") if p.is_file() and p.name != ".lock")

        assert files(g) == files(a)
        assert "DONE" in files(g) and "analysis/margins.npz" in files(g)
        sg, sa = RunDir(g).read_summary(), RunDir(a).read_summary()
        assert set(sg) - set(sa) == {"vectorized"} and sg["vectorized"]["group_size"] == 2
        assert set(sg["final"]) == set(sa["final"])
        assert RunDir(g).read_config()["canonical"] == RunDir(a).read_config()["canonical"]
        lg = torch.load(RunDir(g).ckpt("last"), weights_only=True)
        la = torch.load(RunDir(a).ckpt("last"), weights_only=True)
        assert lg.keys() == la.keys() and lg["step"] == la["step"] == 16  # saved when training ended
        assert lg["optimizer"]["param_groups"] == la["optimizer"]["param_groups"]
        assert lg["optimizer"]["state"].keys() == la["optimizer"]["state"].keys()
        for which in ("final", "best", "snap_00000008"):
            cg = torch.load(RunDir(g).ckpt(which), weights_only=True)
            ca = torch.load(RunDir(a).ckpt(which), weights_only=True)
            assert cg.keys() == ca.keys()
            for k, v in ca["model"].items():  # compact tensors, not views of the whole stack
                assert cg["model"][k].shape == v.shape
                assert cg["model"][k].untyped_storage().nbytes() == v.untyped_storage().nbytes()


def test_group_syncs_once_before_done_instead_of_fsyncing_each_file(tmp_path, monkeypatch):
    import os

    from reglab import loop
    from reglab.vectorized import trainer as group_trainer

    events: list[str] = []
    monkeypatch.setattr(os, "fsync", lambda fd: events.append("fsync"))
    monkeypatch.setattr(group_trainer, "sync_to_disk", lambda: events.append("sync"))
    monkeypatch.setattr(loop, "sync_to_disk", lambda: events.append("sync"))
    real_mark_done = RunDir.mark_done
    monkeypatch.setattr(RunDir, "mark_done", lambda self: (events.append("DONE"), real_mark_done(self))[1])
    runs = planned(tmp_path, [(0, 0.1, 1e-3), (1, 0.1, 1e-2)], "regularizers=[{name: l2, lam: LAM}]", *NO_ANALYSIS)
    res = train_group(runs, tmp_path / "g")
    assert [r["status"] for r in res] == ["done", "done"]
    assert "fsync" not in events
    # resume points (one sync per evaluation round that saved them), then all files, DONE x2, sync
    assert events[-4:] == ["sync", "DONE", "DONE", "sync"] and events.count("sync") >= 3


def test_per_model_divergence(tmp_path):
    # One run diverges (huge lr); its group partner trains to the end, both exactly as alone.
    runs = planned(tmp_path, [(0, 0.1, 0.0), (0, 1e6, 0.0)], "optim.momentum=0.9", "train.epochs=8", *NO_ANALYSIS)
    compare_group_with_alone(tmp_path, runs, ["done", "diverged"])
    s = [RunDir(tmp_path / "group" / r.hash).read_summary() for r in runs]
    assert s[0]["status"] == "done" and s[1]["status"] == "diverged"
    assert s[1]["steps"] < s[0]["steps"]


def test_interrupted_group_resumes_like_uninterrupted(tmp_path, monkeypatch):
    over = [
        "train.epochs=3",
        "regularizers=[{name: _test_fault, lam: 1.0}, {name: path_energy, lam: LAM}]",
        "optim.name=adam",
        *NO_ANALYSIS,
    ]
    variants = [(0, 0.01, 1e-2), (1, 0.02, 1e-1)]
    ref = planned(tmp_path / "ref", variants, *over)
    assert [r["status"] for r in train_group(ref, tmp_path / "ref")] == ["done", "done"]
    _Fault.raise_at = 19  # after the checkpoint at the end of epoch 2 (step 16)
    runs = planned(tmp_path / "int", variants, *over)
    res = train_group(runs, tmp_path / "int")
    assert [r["status"] for r in res] == ["failed", "failed"] and "injected crash" in res[0]["error"]
    for r in runs:
        rd = RunDir(tmp_path / "int" / r.hash)
        assert not rd.done and (rd.path / "error.json").exists()
        assert torch.load(rd.ckpt("last"), weights_only=True)["step"] == 16
    _Fault.raise_at = None
    # run 0 resumes one by one from the group's checkpoint, run 1 as a (sub)group of one
    run(runs[0].config, root=tmp_path / "int")
    assert train_group(runs, tmp_path / "int")[1]["status"] == "done"
    for a, b in zip(ref, runs):
        ra, rb = RunDir(tmp_path / "ref" / a.hash), RunDir(tmp_path / "int" / b.hash)
        assert not (rb.path / "error.json").exists()
        assert_rows_close(rb.steps(), ra.steps(), "steps")
        assert_rows_close(rb.evals(), ra.evals(), "evals")
    # and a whole group resumes as a group: bit-for-bit the uninterrupted group
    _Fault.raise_at = 19
    runs2 = planned(tmp_path / "int2", variants, *over)
    train_group(runs2, tmp_path / "int2")
    _Fault.raise_at = None
    assert [r["status"] for r in train_group(runs2, tmp_path / "int2")] == ["done", "done"]
    for a, b in zip(ref, runs2):
        ea = [{k: v for k, v in e.items() if k != "time"} for e in RunDir(tmp_path / "ref" / a.hash).evals()]
        eb = [{k: v for k, v in e.items() if k != "time"} for e in RunDir(tmp_path / "int2" / b.hash).evals()]
        assert ea == eb
        assert RunDir(tmp_path / "ref" / a.hash).steps() == RunDir(tmp_path / "int2" / b.hash).steps()


def test_done_runs_skipped_and_locked_runs_busy(tmp_path):
    from reglab.store import RunLock

    runs = planned(tmp_path, [(0, 0.1, 0.0), (1, 0.1, 0.0), (2, 0.1, 0.0)], "train.epochs=1", *NO_ANALYSIS)
    run(runs[0].config, root=tmp_path)
    lock = RunLock(tmp_path / runs[1].hash)
    assert lock.acquire()
    try:
        res = train_group(runs, tmp_path)
    finally:
        lock.release()
    assert [r["status"] for r in res] == ["skipped", "busy", "done"]
    with pytest.raises(ValueError, match="plan_groups"):
        train_group([*runs, *planned(tmp_path, [(0, 0.1, 0.0)], "train.batch_size=16")], tmp_path)


def test_fallback_reasons(tmp_path, monkeypatch):
    ok = planned(tmp_path, [(0, 0.1, 1e-3), (1, 0.1, 1e-2)], "regularizers=[{name: l2, lam: LAM}]")
    bn = planned(tmp_path, [(0, 0.1, 0.0), (1, 0.1, 0.0)], "model.batch_norm=true")
    gn = planned(tmp_path, [(0, 0.1, 1e-3), (1, 0.1, 1e-3)], "regularizers=[{name: gradient_norm, lam: LAM}]")
    es = planned(tmp_path, [(0, 0.1, 0.0), (1, 0.1, 0.0)], "data.val_size=64", "train.early_stopping.patience=2")
    lone = planned(tmp_path, [(0, 0.1, 0.0)], "train.batch_size=16")
    groups, singles = plan_groups([*ok, *bn, *gn, *es, *lone])
    assert [[r.hash for r in g] for g in groups] == [[r.hash for r in ok]]
    why = {r.hash: w for r, w in singles}
    assert all("batch norm" in why[r.hash] for r in bn)
    assert all("gradient_norm does not vectorize" in why[r.hash] for r in gn)
    assert all("early_stopping" in why[r.hash] for r in es)
    assert "group of 1" in why[lone[0].hash]
    lines = describe_plan(groups, singles)
    assert lines[0].startswith("vectorized group of 2 runs") and "regularizers.0.lam" in lines[0] and "seed" in lines[0]
    # monitors and abort rules are the one-by-one trainer's
    mon = planned(tmp_path, [(0, 0.1, 0.0), (1, 0.1, 0.0)], "analysis.monitors=[nuclear_norm]")
    ab = planned(tmp_path, [(0, 0.1, 0.0), (1, 0.1, 0.0)], "train.abort={below: 0.5, after_epochs: 1}")
    g2, s2 = plan_groups([*mon, *ab])
    assert not g2 and {w.split(":")[0] for _, w in s2} == {"analysis.monitors", "train.abort"}
    # one line per reason, not per run: bn, gradient_norm, early stopping, group of 1
    assert len(lines) == 1 + len({w for _, w in singles}) == 5
    bn_line = next(line for line in lines if "batch norm" in line)
    assert bn_line.startswith("one by one (2 runs: ") and all(r.hash in bn_line for r in bn)
    # the size rule and splitting of large groups
    big = planned(tmp_path, [(s, 0.1, 0.0) for s in range(5)], "model.widths=[20,2000,600,4]")
    assert grouping.count_params(big[0].config) == 20 * 2000 + 2000 + 2000 * 600 + 600 + 600 * 4 + 4
    groups, singles = plan_groups(big)
    assert not groups and "parameters" in singles[0][1]
    groups, singles = plan_groups(big, max_params=10**7, max_group=2)
    assert [len(g) for g in groups] == [2, 2] and len(singles) == 1
    groups, singles = plan_groups(big, auto=False)  # --vectorize on: size alone is no reason
    assert [len(g) for g in groups] == [5] and not singles


def test_convolutions_group_only_when_forced_on_cpu(tmp_path):
    conv = ["data.dataset=cifar10", "model.name=hardernet", "model.widths=null", "device=cpu"]
    runs = planned(tmp_path, [(0, 0.1, 0.0), (1, 0.1, 0.0)], *conv)
    assert grouping.has_convolutions(runs[0].config) and not grouping.has_convolutions(
        planned(tmp_path, [(0, 0.1, 0.0)])[0].config
    )
    groups, singles = plan_groups(runs, max_params=10**9)  # the convolution rule alone
    assert not groups and all("convolutions" in why and "--vectorize on" in why for _, why in singles)
    groups, singles = plan_groups(runs, auto=False)
    assert [len(g) for g in groups] == [2] and not singles


@pytest.mark.parametrize("threads, grouped", [(1, False), (2, True), (8, True)])
def test_the_size_limit_follows_the_threads_the_group_trains_on(tmp_path, monkeypatch, threads, grouped):
    # 20-2800-4: 70 004 parameters, between MAX_PARAMS_ONE_THREAD and MAX_PARAMS
    runs = planned(tmp_path, [(0, 0.1, 0.0), (1, 0.1, 0.0)], "model.widths=[20,2800,4]")
    n = grouping.count_params(runs[0].config)
    assert grouping.MAX_PARAMS_ONE_THREAD < n == 20 * 2800 + 2800 + 2800 * 4 + 4 < grouping.MAX_PARAMS
    monkeypatch.setattr(torch, "get_num_threads", lambda: threads)
    groups, singles = plan_groups(runs)
    if grouped:
        assert [len(g) for g in groups] == [2] and not singles
    else:
        limit = f"{grouping.MAX_PARAMS_ONE_THREAD:,}"
        assert not groups and all(
            f"{n:,} parameters > {limit} (the limit at one torch thread)" in why for _, why in singles
        )


def test_label_noise_from_run_seed_groups_only_same_seed(tmp_path):
    runs = planned(tmp_path, [(0, 0.1, 0.0), (1, 0.1, 0.0), (0, 0.2, 0.0)], "data.label_noise=0.2")
    groups, singles = plan_groups(runs)
    assert [[r.hash for r in g] for g in groups] == [[runs[0].hash, runs[2].hash]]
    assert [r.hash for r, _ in singles] == [runs[1].hash]


@pytest.mark.parametrize(
    "noise, builds",
    # (noise drawn from the run seed makes runs of different seeds group apart: grouping.group_key)
    [([], 1), (["data.label_noise=0.1", "data.noise_seed=7"], 1)],
    ids=["clean", "fixed-noise"],
)
def test_a_group_builds_each_distinct_dataset_once(tmp_path, monkeypatch, noise, builds):
    """train.prepare takes already-built data, so a group hands its runs one TaskData instead of
    normalizing the dataset per run (and nothing is monkeypatched inside reglab to do it)."""
    import reglab.data

    calls = []
    real = reglab.data.build_task

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(reglab.data, "build_task", counting)
    runs = planned(
        tmp_path,
        [(0, 0.1, 1e-3), (1, 0.05, 1e-3), (0, 0.05, 0.0)],
        "regularizers=[{name: l2, lam: LAM}]",
        *NO_ANALYSIS,
        *noise,
    )
    res = train_group(runs, tmp_path / "group")
    assert [r["status"] for r in res] == ["done"] * 3
    assert len(calls) == builds
