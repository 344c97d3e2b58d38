"""The tune stage of `reglab reproduce` (reglab.reproduce_tune): the autol2tune preset runs end to
end at a tiny budget, each seed's search stays within the budget of one run and says what it spent,
the tuned setting is its best trial by validation (also when test disagrees), a restart reuses
every finished trial and run, and a pruner's savings are spent on further trials, counted."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from click.testing import CliRunner

from reglab.cli import cli
from reglab.reproduce import PRESET_DIR

pytest.importorskip("optuna")

TINY = [
    "data.dataset=digits",  # no download; 1 197 training images after the validation split
    "data.val_size=300",
    "model.widths=[64,32,10]",
    "train.epochs=2",
    "train.batch_size=64",
]
"""The quick preset on digits: B = 2 epochs of 19 steps = 38 steps, trials of 38 // 5 = 7 steps."""


def reproduce(root: Path, *args: str):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return CliRunner().invoke(cli, ["reproduce", "autol2tune", "-o", str(root), "-j", "1", *TINY, *args])
    finally:
        torch.set_num_threads(threads)


def record(root: Path) -> dict:
    return json.loads((root / "sweeps" / "autol2tune-quick.tune.json").read_text())


def summary(run: Path) -> dict:
    return json.loads((run / "summary.json").read_text())


def fingerprint(root: Path) -> dict[str, tuple]:
    """Every run directory with its summary's modification time and training segments."""
    return {
        d.name: ((d / "summary.json").stat().st_mtime_ns, len(summary(d)["trained_by"]))
        for d in root.iterdir()
        if (d / "summary.json").exists()
    }


@pytest.fixture(scope="module")
def seed0(tmp_path_factory):
    """The preset with seed 0 only, run once: (results root, output)."""
    root = tmp_path_factory.mktemp("autol2tune") / "runs"
    r = reproduce(root, "seed=0")
    assert r.exit_code == 0, r.output
    return root, r.output


@pytest.fixture(scope="module")
def two_seeds(seed0):
    """Then seeds 0 and 1 into the same root: (root, output, run directories after seed 0)."""
    root, _ = seed0
    before = fingerprint(root)
    r = reproduce(root, "seed=0,1")
    assert r.exit_code == 0, r.output
    return root, r.output, before


def test_each_search_stays_within_one_runs_steps_and_says_what_it_spent(two_seeds):
    root, out, _ = two_seeds
    rec = record(root)
    assert [s["seed"] for s in rec["seeds"]] == [0, 1]
    for s in rec["seeds"]:
        assert s["budget_steps"] == 38 and s["steps_per_trial"] == 7
        assert len(s["trials"]) == 5 and all(t["state"] == "complete" for t in s["trials"])
        for t in s["trials"]:  # each trial charged the steps its run trained
            assert t["steps"] == summary(root / t["run"])["steps"] == 7
        assert s["spent_steps"] == sum(t["steps"] for t in s["trials"]) == 35 <= s["budget_steps"]
    # budget_steps per setting: the adaptive runs one run each, the tuned setting its trials, the
    # retrained one its trials plus one run
    agg = pd.read_csv(root / "sweeps" / "autol2tune-quick.summary.csv").set_index("setting")
    assert agg.loc[["autol2", "autol2 official", "advance_l2"], "budget_steps_mean"].tolist() == [38, 38, 38]
    assert agg.loc["tuned fixed lam", "budget_steps_mean"] == 35
    assert agg.loc["tuned fixed lam retrained (2B)", "budget_steps_mean"] == 35 + 38
    assert (agg["n"] == 2).all()
    assert "## Budget: training steps per seed" in out and "| 1 | 38 | 38 | 38 | 38 | 35 | 73 | 5 (5 complete) |" in out
    assert "claim [autol2-within-1-point-of-tuned, outcome]" in out and "paired by seed (n=2)" in out


def test_the_tuned_setting_is_each_seeds_best_trial_by_validation(two_seeds):
    root, _, _ = two_seeds
    for s in record(root)["seeds"]:
        best = max(s["trials"], key=lambda t: (t["value"], -t["number"]))  # Optuna keeps the first of ties
        assert s["best"]["run"] == best["run"] and s["best"]["value"] == best["value"]
        assert summary(root / best["run"])["final"]["val_acc"] == best["value"]
        retrained = json.loads((root / s["retrained_run"] / "config.json").read_text())["config"]
        assert retrained["regularizers"][0]["lam"] == s["best"]["values"]["regularizers.0.lam"]
        assert retrained["train"]["epochs"] == 2 and retrained["seed"] == s["seed"]


def test_a_restart_reuses_every_finished_trial_and_run(two_seeds, tmp_path):
    root, out, before = two_seeds
    after = fingerprint(root)
    assert all(after[run] == fp for run, fp in before.items())  # seed 0: nothing trained again
    assert "seed 0: trial" not in out and "seed 1: trial 4" in out  # seed 1 searched, seed 0 not
    r = reproduce(root, "seed=0,1", "--publish", str(tmp_path / "pages"))
    assert r.exit_code == 0, r.output
    assert fingerprint(root) == after and ": trial " not in r.output
    assert [len(s["trials"]) for s in record(root)["seeds"]] == [5, 5]
    page = (tmp_path / "pages" / "autol2tune-quick.md").read_text()
    assert "## Budget: training steps per seed" in page and "| tuned fixed lam retrained (2B) | 2 |" in page


def test_the_tuned_setting_is_chosen_on_validation_when_test_disagrees(two_seeds, tmp_path):
    """Each seed's val-best trial is made the worst on test and every other trial the best: the
    tuned setting still stands for the val-best one, with its (now lowest) test accuracy."""
    root, _, _ = two_seeds
    work = tmp_path / "runs"
    import shutil

    shutil.copytree(root, work)
    rec = record(work)
    for s in rec["seeds"]:
        for t in s["trials"]:
            path = work / t["run"] / "summary.json"
            data = json.loads(path.read_text())
            data["final"]["test_acc"] = 0.0 if t["run"] == s["best"]["run"] else 1.0
            path.write_text(json.dumps(data))
    r = reproduce(work, "seed=0,1", "--no-train")
    assert r.exit_code == 0, r.output
    agg = pd.read_csv(work / "sweeps" / "autol2tune-quick.summary.csv").set_index("setting")
    assert agg.loc["tuned fixed lam", "test_acc_mean"] == 0.0


def test_steps_a_pruner_saves_go_to_further_trials_and_are_counted(tmp_path, monkeypatch):
    """A median pruner judging every 2 steps: a pruned trial is charged up to where it stopped,
    and trials go on while one more fits in B."""
    import reglab.reproduce as reproduce_module

    preset = yaml.safe_load((PRESET_DIR / "autol2tune_quick.yaml").read_text())
    preset["reproduce"]["tune"]["pruner"] = {"name": "median", "n_startup_trials": 1, "n_warmup_steps": 0}
    preset["reproduce"]["tune"]["sampler"] = {"name": "random"}
    preset["reproduce"]["tune"]["base"].update({"train.eval_unit": "iteration", "train.eval_every": 2})
    presets = tmp_path / "presets"
    presets.mkdir()
    (presets / "autol2tune_quick.yaml").write_text(yaml.safe_dump(preset, sort_keys=False))
    monkeypatch.setattr(reproduce_module, "PRESET_DIR", presets)
    root = tmp_path / "runs"
    r = reproduce(root, "seed=0,1,2", "optim.lr=0.3")
    assert r.exit_code == 0, r.output
    counts = []
    for s in record(root)["seeds"]:
        for t in s["trials"]:
            evals = (root / t["run"] / "evals.jsonl").read_text().splitlines()
            last = json.loads(evals[-1])["step"]
            assert t["steps"] == last <= 7 and (last == 7 or t["state"] == "pruned")
        assert s["spent_steps"] == sum(t["steps"] for t in s["trials"]) <= 38
        assert s["spent_steps"] + 7 > 38  # the search went on while one more trial fitted
        counts.append(len(s["trials"]))
    assert max(counts) > 5  # pruned trials left room for a sixth (seed 1: 7+7+6+7+4+7 = 38)


def test_charges_count_a_retried_trials_steps_once(tmp_path):
    """A failed trial that was queued again is charged through its retry, which continues its run;
    a duplicate of an earlier trial is charged again in full."""
    from optuna.distributions import FloatDistribution
    from optuna.trial import TrialState, create_trial

    from reglab.reproduce_tune import charges

    for run, steps in (("aaa", 7), ("bbb", 4)):
        (tmp_path / run).mkdir()
        (tmp_path / run / "summary.json").write_text(json.dumps({"steps": steps}))
    dist = {"x": FloatDistribution(0.0, 1.0)}

    def trial(number, state, run, **system):
        t = create_trial(
            state=state, params={"x": 0.5}, distributions=dist, user_attrs={"run_hash": run}, system_attrs=system
        )
        t.number = number
        return t

    trials = [
        trial(0, TrialState.FAIL, "aaa"),
        trial(1, TrialState.RUNNING, "aaa", failed_trial=0),
        trial(2, TrialState.RUNNING, "bbb"),
        trial(3, TrialState.RUNNING, "bbb"),
    ]
    assert charges(trials, tmp_path) == {0: 0, 1: 7, 2: 4, 3: 4}


def test_a_search_resumed_between_trials_proposes_what_an_uninterrupted_one_would(tmp_path):
    """One search stopped after 2 trials (its budget cut to 2 shares) and resumed, the other run
    straight through: the same 5 values, in the same order."""
    from dataclasses import replace

    from reglab.reproduce import load_preset, preset_path
    from reglab.reproduce_tune import parse_stage, plan, read_seed, search_seed
    from reglab.sweep.grid import with_overrides

    spec, meta = load_preset(preset_path("autol2tune", "quick"))
    stage = parse_stage(meta)
    assert stage is not None
    proposed = []
    for root, stops in ((tmp_path / "straight", [None]), (tmp_path / "resumed", [2, None])):
        (p,) = plan(stage, {**with_overrides(spec, TINY), "output": str(root)}, "t", [0], None)
        for shares in stops:
            search_seed(p if shares is None else replace(p, budget=shares * p.share), None)
        proposed.append([t["values"]["regularizers.0.lam"] for t in read_seed(p).trials])
    assert len(proposed[0]) == 5 and proposed[0] == proposed[1]
