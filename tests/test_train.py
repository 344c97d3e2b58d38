"""The training loop end to end: files, reproducibility, early stopping, NaN guard, resume."""

from __future__ import annotations

import json

import pytest
import torch

from helpers import _Fault, small_config
from reglab import train as train_mod
from reglab.results import load_evals, load_runs
from reglab.store import RunDir
from reglab.train import run
from regularizer_cases import REGULARIZER_CASES


@pytest.fixture(autouse=True)
def _reset_faults():
    _Fault.nan_at = _Fault.raise_at = None
    yield
    _Fault.nan_at = _Fault.raise_at = None


def test_run_writes_every_file(tmp_path):
    cfg = small_config(tmp_path)
    res = run(cfg)
    rd = RunDir(res.path)
    assert res.status == "done" and rd.done
    for name in (
        "config.json",
        "steps.jsonl",
        "evals.jsonl",
        "summary.json",
        "checkpoints/final.pt",
        "checkpoints/best.pt",
        "DONE",
    ):
        assert (res.path / name).exists(), name
    steps = rd.steps()
    # 256 examples / batch 32 = 8 steps an epoch, 2 epochs, every step logged.
    assert [r["step"] for r in steps] == list(range(16))
    evals = rd.evals()
    assert [e["step"] for e in evals] == [0, 8, 16]  # initial model, then every epoch
    final = torch.load(rd.ckpt("final"), weights_only=True)
    assert set(final["model"]) == {"fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"}
    cfgjson = json.loads((res.path / "config.json").read_text())
    assert cfgjson["hash"] == res.path.name
    df = load_runs(tmp_path)
    assert len(df) == 1 and df.loc[0, "status"] == "done"
    assert df.loc[0, "test_acc"] == pytest.approx(evals[-1]["test_acc"])
    assert df.loc[0, "optim.lr"] == 0.1


def test_same_seed_same_metrics_and_different_seed_differs(tmp_path):
    a = run(small_config(tmp_path / "a"))
    b = run(small_config(tmp_path / "b"))
    c = run(small_config(tmp_path / "c", "seed=1"))
    ea = load_evals(tmp_path / "a").drop(columns=["time", "run"])
    eb = load_evals(tmp_path / "b").drop(columns=["time", "run"])
    ec = load_evals(tmp_path / "c").drop(columns=["time", "run"])
    assert ea.equals(eb)
    assert not ea.equals(ec)
    assert a.hash == b.hash != c.hash


def test_finished_run_is_not_redone(tmp_path):
    cfg = small_config(tmp_path)
    first = run(cfg)
    second = run(cfg)
    assert second.skipped and second.path == first.path


def test_nan_guard_marks_run_diverged_and_stops(tmp_path):
    _Fault.nan_at = 5
    cfg = small_config(tmp_path, "regularizers=[{name: _test_fault, lam: 1.0}]")
    res = run(cfg)
    assert res.status == "diverged"
    assert res.summary["diverged_step"] == 5
    rd = RunDir(res.path)
    assert rd.done
    steps = rd.steps()
    assert steps[-1]["step"] == 5  # nothing logged past the bad step
    assert res.summary["steps"] < 16


def test_early_stopping_restores_best_weights(tmp_path, monkeypatch):
    # Scripted validation losses: best at the 2nd evaluation (after step 1), then worse.
    val_losses = iter([1.0, 0.5, 0.7, 0.8, 0.9, 0.95, 0.99])
    real_evaluate = train_mod.evaluate

    def scripted(model, x, y, loss_fn, task, bs):
        m = real_evaluate(model, x, y, loss_fn, task, bs)
        if x.shape[0] == 64:  # the validation split (256 * 0.25)
            m["loss"] = next(val_losses)
        return m

    monkeypatch.setattr(train_mod, "evaluate", scripted)
    over = ["data.val_size=64", "train.eval_unit=iteration", "train.eval_every=1", "train.early_stopping.patience=2"]
    res = run(small_config(tmp_path / "es", *over))
    assert res.summary["stopped_early"] and res.summary["restored_best"]
    assert res.summary["best_step"] == 1
    assert res.summary["steps"] == 3  # evals at steps 0,1,2,3: 2 without improvement after step 1
    # one row per evaluation; the final metrics are the restored (best) weights', labelled with
    # the best step, and equal that step's logged row (evaluation is deterministic)
    evals = RunDir(res.path).evals()
    assert [r["step"] for r in evals] == [0, 1, 2, 3]
    final = res.summary["final"]
    assert final["step"] == 1 and final["test_acc"] == evals[1]["test_acc"]
    assert final["test_loss"] == pytest.approx(evals[1]["test_loss"], rel=1e-6)
    monkeypatch.setattr(train_mod, "evaluate", real_evaluate)
    # The weights after exactly one step, trained independently:
    ref = run(small_config(tmp_path / "ref", "data.val_size=64", "train.iterations=1"))
    w_final = torch.load(RunDir(res.path).ckpt("final"), weights_only=True)["model"]
    w_ref = torch.load(RunDir(ref.path).ckpt("final"), weights_only=True)["model"]
    for k in w_ref:
        assert torch.equal(w_final[k], w_ref[k]), k


@pytest.mark.parametrize(
    "extra, model",
    [
        ("", []),
        # state across the checkpoint: the pending update of path energy; hooks re-registered by
        # jacobian_nuclear; the data gradient handed over by gradient_norm's finite differences;
        # Rho-WN's global scale (a parameter on the model itself, applied by a forward hook)
        (", {name: path_energy, lam: 50.0}", []),
        (", {name: jacobian_nuclear, lam: 0.5, split: 2}", []),
        (", {name: gradient_norm, lam: 0.5, method: finite_difference}", []),
        (", {name: l2_mul, lam: 0.1}", ["model.weight_norm=rho", "model.wn_g0=2.0"]),
    ],
    ids=["plain", "path_energy", "jacobian_nuclear", "gradient_norm_fd", "rho_wn"],
)
def test_interrupted_run_resumes_to_identical_results(tmp_path, extra, model):
    over = ["train.epochs=3", f"regularizers=[{{name: _test_fault, lam: 1.0}}{extra}]", *model]
    ref = run(small_config(tmp_path / "ref", *over))
    _Fault.raise_at = 19  # after the checkpoint written at the end of epoch 2 (step 16)
    cfg = small_config(tmp_path / "int", *over)
    with pytest.raises(RuntimeError, match="injected crash"):
        run(cfg)
    rd = RunDir(tmp_path / "int" / ref.hash)
    assert not rd.done and (rd.path / "error.json").exists()
    _Fault.raise_at = None
    res = run(cfg)
    assert res.status == "done" and not (rd.path / "error.json").exists()
    a = load_evals(tmp_path / "ref").drop(columns=["time", "run"])
    b = load_evals(tmp_path / "int").drop(columns=["time", "run"])
    assert a.equals(b)
    sa = [(r["step"], r["loss"]) for r in RunDir(ref.path).steps()]
    sb = [(r["step"], r["loss"]) for r in rd.steps()]
    assert sa == sb


def test_lr_schedules_follow_their_formulas(tmp_path):
    res = run(
        small_config(tmp_path, "lr_schedule.name=multistep", "lr_schedule.milestones=[1]", "lr_schedule.gamma=0.5")
    )
    lrs = {r["step"]: r["lr"] for r in RunDir(res.path).steps()}
    assert lrs[0] == pytest.approx(0.1) and lrs[7] == pytest.approx(0.1)
    assert lrs[8] == pytest.approx(0.05) and lrs[15] == pytest.approx(0.05)
    res = run(
        small_config(
            tmp_path,
            "lr_schedule.name=cosine",
            "lr_schedule.unit=iteration",
            "lr_schedule.eta_min=0.01",
            "train.epochs=1",
        )
    )
    lrs = [r["lr"] for r in RunDir(res.path).steps()]
    import math

    expect = [0.01 + 0.5 * (0.1 - 0.01) * (1 + math.cos(math.pi * t / 8)) for t in range(8)]
    assert lrs == pytest.approx(expect)


def test_iteration_budget_and_partial_last_batch(tmp_path):
    res = run(small_config(tmp_path, "train.batch_size=100", "train.epochs=null", "train.iterations=7"))
    # 256 examples at batch 100: 3 steps an epoch (the last one has 56 examples).
    assert res.summary["steps"] == 7 and res.summary["steps_per_epoch"] == 3


def test_penalty_enters_the_loss_and_the_gradient(tmp_path):
    plain = run(small_config(tmp_path / "plain"))
    reg = run(small_config(tmp_path / "reg", "regularizers=[{name: l2, lam: 1.0}]"))
    # every logged step: total = data loss + lam * penalty
    for row in RunDir(reg.path).steps():
        assert row["total_loss"] == pytest.approx(row["loss"] + 1.0 * row["penalty.l2"], rel=1e-5)
        assert row["lam.l2"] == 1.0

    def weight_sq(path):
        sd = torch.load(RunDir(path).ckpt("final"), weights_only=True)["model"]
        return sum(float((v**2).sum()) for k, v in sd.items() if k.endswith("weight"))

    assert weight_sq(reg.path) < 0.7 * weight_sq(plain.path)
    assert reg.summary["final"]["l2.penalty"] == pytest.approx(weight_sq(reg.path), rel=1e-4)


@pytest.mark.parametrize("sched", ["autol2", "advance_l2"])
def test_logged_lambda_is_the_one_the_step_used(tmp_path, sched):
    """At a step where the schedule changes lambda (after measuring it), the row still carries the
    lambda its loss was built with: total = loss + lam * penalty on every row."""
    regs = f"regularizers=[{{name: l2, lam: 0.1, schedule: {{name: {sched}, every: 2, delay: 0.0}}}}]"
    rows = RunDir(run(small_config(tmp_path, regs, "train.epochs=4")).path).steps()
    assert len({r["lam.l2"] for r in rows}) > 1, "lambda never changed: the test would not test it"
    for r in rows:
        assert r["total_loss"] == pytest.approx(r["loss"] + r["lam.l2"] * r["penalty.l2"], rel=1e-5), r["step"]


@pytest.mark.parametrize("compat, expected", [(True, [2, 5, 10, 13]), (False, [2, 5, 8, 11, 14])])
def test_autol2_measures_on_its_cadence_through_the_trainer(tmp_path, monkeypatch, compat, expected):
    """8 batches an epoch, every 3: compat counts the batch's index in its epoch (i = 2, 5 in each
    epoch), the official rule the global step."""
    from reglab.schedules.autol2 import AutoL2

    seen = []
    real = AutoL2.observe
    monkeypatch.setattr(
        AutoL2, "observe", lambda self, step, metrics: (seen.append(step), real(self, step, metrics))[1]
    )
    regs = f"regularizers=[{{name: l2, lam: 0.1, schedule: {{name: autol2, every: 3, compat: {str(compat).lower()}}}}}]"
    run(small_config(tmp_path, regs))
    assert seen == expected


def test_path_energy_penalty_is_the_previous_update_length(tmp_path):
    plain = run(small_config(tmp_path / "plain"))
    res = run(small_config(tmp_path / "pe", "regularizers=[{name: path_energy, lam: 50.0}]"))
    pen = [r["penalty.path_energy"] for r in RunDir(res.path).steps()]
    assert pen[0] == 0.0 and all(p > 0 for p in pen[1:])  # E_1 = 0, then the last update's length
    # per epoch (evaluations at every epoch end): the epoch's energy is the growth of the total
    evals = [r for r in RunDir(res.path).evals() if r["step"] > 0]
    assert len(evals) == 2
    totals = [0.0] + [r["path_energy.energy_total"] for r in evals]
    for r, before in zip(evals, totals):
        assert r["path_energy.energy_epoch"] == pytest.approx(r["path_energy.energy_total"] - before, rel=1e-6)
        assert r["path_energy.energy_epoch"] > 0
    # the friction term changes training
    assert res.summary["final"]["train_loss"] != pytest.approx(plain.summary["final"]["train_loss"], rel=1e-6)


def _final_weights(res):
    return torch.load(RunDir(res.path).ckpt("final"), weights_only=True)["model"]


@pytest.mark.parametrize(
    "decoupled, reference",
    [
        # Adam + decoupled decay is AdamW (which decays the pre-step weights)
        (["optim.name=adam", "optim.lr=0.01"], ["optim.name=adamw", "optim.lr=0.01", "optim.weight_decay=0.5"]),
        # plain SGD: the decay before the step is the gradient of (lam/2) sum ||p||^2
        (
            ["optim.momentum=0.0"],
            ["optim.momentum=0.0", "regularizers=[{name: l2, lam: 0.5, half: true, roles: [weight, bias]}]"],
        ),
    ],
    ids=["adam_is_adamw", "sgd_is_half_l2"],
)
def test_decoupled_weight_decay_acts_on_the_pre_step_weights(tmp_path, decoupled, reference):
    # the call the README documents for the AdamW equivalence (AdamW decays every parameter)
    regs = "regularizers=[{name: decoupled_weight_decay, lam: 0.5, roles: [weight, bias, norm]}]"
    a = _final_weights(run(small_config(tmp_path / "decoupled", "train.epochs=2", *decoupled, regs)))
    b = _final_weights(run(small_config(tmp_path / "reference", "train.epochs=2", *reference)))
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("regularize_bias", [True, False])
def test_final_analysis_measures_path_norm_as_pathprox_does(tmp_path, regularize_bias):
    """Study 4's bug 2 (biases never in the sparsity/path-norm measurement) stays fixed in the
    final analysis too: it counts biases exactly when the PathProx run regularizes them."""
    reg = f"regularizers=[{{name: pathprox, lam: 0.05, regularize_bias: {str(regularize_bias).lower()}}}]"
    res = run(small_config(tmp_path, "model.widths=[20,32,16,4]", reg))
    final = res.summary["final"]
    assert final["path_norm_total"] == pytest.approx(final["pathprox.path_norm"], rel=1e-6)
    sparsity = json.loads((RunDir(res.path).path / "analysis" / "sparsity.json").read_text())
    assert sparsity["include_bias"] is regularize_bias


@pytest.mark.parametrize("algorithm", ["prox", "weight_decay"])
def test_pathprox_runs_log_the_full_objectives(tmp_path, algorithm):
    """Both algorithms log train_loss + lam * R for both objectives at every evaluation, so the
    two kinds of runs compare on the same numbers (study 4's "wd objective")."""
    reg = f"regularizers=[{{name: pathprox, lam: 0.05, algorithm: {algorithm}}}]"
    rows = RunDir(run(small_config(tmp_path, "model.widths=[20,32,16,4]", reg)).path).evals()
    assert rows
    for r in rows:
        for name in ("objective_l2", "objective_path_norm"):
            full = r["train_loss"] + r["lam.pathprox"] * r[f"pathprox.{name}"]
            assert r[f"pathprox.train_{name}"] == pytest.approx(full, rel=1e-12)


# Each regularizer, through the real trainer, must change training when lam > 0 (catches
# penalties that are inert because of call order, detached graphs or zero gradients).
# every regularizer's row (tests/regularizer_cases.py) at a lambda that must show, and variants
STRONG: dict[str, tuple[str, list[str]]] = {
    name: (case.with_lam(case.strong_lam), [*case.overrides, f"optim.lr={case.lr!r}"])
    for name, case in REGULARIZER_CASES.items()
}
STRONG |= {
    "l2_sum_plain": ("{name: l2_sum, lam: 0.5}", []),
    "pathprox_wd": ("{name: pathprox, lam: 0.5, algorithm: weight_decay}", []),
    "gradient_norm_fd": ("{name: gradient_norm, lam: 0.5, method: finite_difference}", []),
}


@pytest.mark.parametrize("case", sorted(STRONG))
def test_each_regularizer_changes_training(tmp_path, case):
    term, settings = STRONG[case]
    over = ["model.widths=[20,32,16,4]", "train.epochs=1", *settings]
    plain = run(small_config(tmp_path / "plain", *over))
    res = run(small_config(tmp_path / case, *over, f"regularizers=[{term}]"))
    assert res.status == "done"
    w0 = torch.load(RunDir(plain.path).ckpt("final"), weights_only=True)["model"]
    w1 = torch.load(RunDir(res.path).ckpt("final"), weights_only=True)["model"]
    moved = max(float((w0[k] - w1[k]).abs().max()) for k in w0)
    assert moved > 1e-4, f"{case} did not change the trained weights"


@pytest.mark.parametrize("epochs, expect_drops", [(10, [3, 6, 9]), (20, [6, 12, 18])])
def test_milestones_as_fractions_of_the_budget(tmp_path, epochs, expect_drops):
    """The WRN schedule (x0.2 at 30/60/90 % of training) from one config at any budget."""
    over = [
        f"train.epochs={epochs}",
        "lr_schedule.name=multistep",
        "lr_schedule.milestone_fractions=[0.3,0.6,0.9]",
        "lr_schedule.gamma=0.2",
        "analysis.margins=false",
        "analysis.spectra=false",
    ]
    res = run(small_config(tmp_path / str(epochs), *over))
    per_epoch = {r["epoch"]: r["lr"] for r in RunDir(res.path).steps()}
    expect = {e: 0.1 * 0.2 ** sum(e >= m for m in expect_drops) for e in range(epochs)}
    assert per_epoch == pytest.approx(expect)


@pytest.mark.parametrize(
    "over, message",
    [
        (["lr_schedule.milestone_fractions=[0.3,1.2]"], "strictly between 0 and 1"),
        (["lr_schedule.milestone_fractions=[0.6,0.3]"], "must be increasing"),
        (["lr_schedule.milestones=[2]", "lr_schedule.milestone_fractions=[0.5]"], "not both"),
    ],
)
def test_milestone_fractions_are_checked(tmp_path, over, message):
    from reglab.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        small_config(tmp_path, "lr_schedule.name=multistep", *over)


def test_milestone_fractions_too_close_for_a_short_budget_are_refused(tmp_path):
    from reglab.errors import ConfigError

    cfg = small_config(tmp_path, "lr_schedule.name=multistep", "lr_schedule.milestone_fractions=[0.3,0.35]")
    with pytest.raises(ConfigError, match=r"lr_schedule\.milestone_fractions: .* coincide"):
        run(cfg)  # 2 epochs: both round to epoch 1


def test_abort_rules_stop_a_run_that_is_not_learning(tmp_path, monkeypatch):
    """Study 1's rules: below X after N epochs, and accuracy exactly 0 (scripted)."""
    base = ["train.epochs=4", "analysis.margins=false", "analysis.spectra=false"]
    # 8 steps an epoch, an evaluation each epoch; synthetic test accuracy stays below 0.99
    res = run(small_config(tmp_path / "below", *base, "train.abort={below: 0.99, after_epochs: 2}"))
    assert res.status == "done" and res.summary["stopped_early"] and res.summary["steps"] == 16
    assert (
        res.summary["stop_reason"].startswith("aborted: test accuracy")
        and "after 2 epochs" in res.summary["stop_reason"]
    )
    assert [r["step"] for r in RunDir(res.path).evals()] == [0, 8, 16]
    # exactly 0 on the second evaluation; early stopping configured too, but an abort restores nothing
    real = train_mod.evaluate
    calls = {"test": 0}

    def scripted(model, x, y, loss_fn, task, bs):
        m = real(model, x, y, loss_fn, task, bs)
        if x.shape[0] == 128:  # the test split
            calls["test"] += 1
            if calls["test"] == 2:
                m["acc"] = 0.0
        return m

    monkeypatch.setattr(train_mod, "evaluate", scripted)
    over = [*base, "train.abort={}", "data.val_size=64", "train.early_stopping.patience=3"]
    res = run(small_config(tmp_path / "zero", *over))
    # 192 training examples after the validation split: 6 steps an epoch
    assert res.summary["steps"] == 6 and res.summary["stop_reason"] == "aborted: test accuracy 0 at step 6"
    assert not res.summary["restored_best"]


def test_abort_on_validation_needs_a_validation_set(tmp_path):
    from reglab.errors import ConfigError

    with pytest.raises(ConfigError, match=r"train\.abort\.split: val needs a validation set"):
        run(small_config(tmp_path, "train.abort={split: val}"))
    with pytest.raises(ConfigError, match="below and after_epochs go together"):
        small_config(tmp_path, "train.abort={below: 0.6}")
