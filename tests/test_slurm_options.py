"""SLURM options (`--slurm KEY=VALUE`, a sweep YAML's `slurm:` block) checked before anything is
submitted or written, their translation to submitit, job states and when a job counts as lost. No cluster
needed: tests/test_slurm.py runs sweeps on a real one (make test-slurm)."""

from __future__ import annotations

import pytest
import yaml
from click.testing import CliRunner

from helpers import SMALL
from reglab.cli import cli
from reglab.errors import ConfigError
from reglab.sweep.slurm_options import OPTIONS, check_with_cluster, slurm_options


def error_of(**raw) -> str:
    with pytest.raises(ConfigError) as e:
        slurm_options(raw)
    return str(e.value)


def test_unknown_and_multi_node_keys_are_refused_naming_what_is_allowed():
    msg = error_of(partitoin="gpu")
    assert msg.startswith("slurm.partitoin: unknown key (allowed: account, array_parallelism,")
    assert all(k in msg for k in OPTIONS)
    assert error_of(nodes=2).startswith("slurm.nodes: a run uses one task on one node")


@pytest.mark.parametrize(
    ("given", "minutes"),
    [(90, 90), (0.5, 1), ("45", 45), ("0:30", 1), ("1:30:00", 90), ("2-00:00:00", 2880), ("1-12", 2160)],
)
def test_time_limits_are_minutes_or_slurm_times(given, minutes):
    assert slurm_options({"time": given}).time_min == minutes


@pytest.mark.parametrize("bad", [0, -5, "soon", "1:xx", True, [1]])
def test_a_bad_time_limit_is_one_line(bad):
    assert error_of(time=bad).startswith("slurm.time: must be")


def test_values_are_checked_by_type_and_range():
    assert error_of(cpus_per_task=0) == "slurm.cpus_per_task: must be an integer >= 1 (got 0)"
    assert error_of(array_parallelism="two").startswith("slurm.array_parallelism: must be an integer >= 1")
    assert error_of(mem_gb=-1).startswith("slurm.mem_gb: must be a number of GB > 0")
    assert error_of(partition="a b").startswith("slurm.partition: must be one name without spaces")
    assert error_of(setup=[1, 2]).startswith("slurm.setup: must be a list of strings")
    assert error_of(time=1, signal_delay_s=60).startswith("slurm.signal_delay_s: 60 s is not before the time limit")


def test_extra_sbatch_arguments_are_long_options_reglab_does_not_set_itself():
    opts = slurm_options({"sbatch_args": "--constraint=a100 --exclusive"})
    assert opts.sbatch_args == {"constraint": "a100", "exclusive": True}
    assert slurm_options({"sbatch_args": ["--mail-type=END"]}).sbatch_args == {"mail-type": "END"}
    assert error_of(sbatch_args=["-C", "a100"]) == "slurm.sbatch_args: '-C': give long options, --name=value"
    assert "(--partition=...)" in error_of(sbatch_args=["-p", "gpu"])
    assert error_of(sbatch_args=["--partition=gpu"]) == "slurm.sbatch_args: --partition: use the option slurm.partition"
    assert error_of(sbatch_args=["--array=0-3"]) == "slurm.sbatch_args: --array: reglab sets it itself"


def test_gpus_per_node_is_the_old_name_of_gpus():
    assert slurm_options({"gpus_per_node": 2}).gpus == 2
    assert error_of(gpus=1, gpus_per_node=1).startswith("slurm.gpus_per_node: give gpus only")


def test_options_become_submitit_parameters_that_submitit_writes_as_sbatch_lines(tmp_path):
    from submitit.slurm.slurm import _make_sbatch_string

    opts = slurm_options(
        {
            "partition": "gpu",
            "time": "2:00:00",
            "cpus_per_task": 4,
            "mem_gb": 1.5,
            "gpus": 1,
            "account": "lab",
            "qos": "high",
            "array_parallelism": 8,
            "signal_delay_s": 120,
            "setup": ["module load cuda"],
            "sbatch_args": ["--constraint=a100", "--exclusive"],
        }
    )
    assert opts.threads == 4
    params = opts.submitit_parameters("grid")
    script = _make_sbatch_string(command="python -m x", folder=tmp_path, map_count=20, **params)
    for line in (
        "--partition=gpu",
        "--time=120",
        "--cpus-per-task=4",
        "--mem=1536MB",
        "--gpus-per-node=1",
        "--account=lab",
        "--qos=high",
        "--array=0-19%8",
        "--signal=USR2@120",
        "--job-name=reglab-grid",
        "--constraint=a100",
        "--exclusive",
    ):
        assert f"#SBATCH {line}\n" in script, (line, script)
    assert "module load cuda" in script
    assert opts.sbatch_flags("grid") == [
        "--time=120",
        "--job-name=reglab-grid",
        "--partition=gpu",
        "--cpus-per-task=4",
        "--mem=1536MB",
        "--gpus-per-node=1",
        "--account=lab",
        "--qos=high",
        "--constraint=a100",
        "--exclusive",
    ]


def test_without_sbatch_the_slurm_executor_says_so(monkeypatch):
    monkeypatch.setenv("PATH", "")
    with pytest.raises(ConfigError, match=r"^--executor: slurm: no sbatch on PATH"):
        check_with_cluster(slurm_options({}))


def sweep(tmp_path, *args: str):
    return CliRunner().invoke(cli, ["sweep", *SMALL, "--output", str(tmp_path / "runs"), *args])


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["--slurm", "partitoin=gpu"], "error: slurm.partitoin: unknown key (allowed: account,"),
        (["--slurm", "time=0"], "error: slurm.time: must be > 0 minutes (got 0)"),
        (["--slurm", "gpu"], "error: --slurm: 'gpu': expected KEY=VALUE"),
        (["--executor", "process", "--slurm", "partition=gpu"], "error: --slurm: needs --executor slurm (not process)"),
        (["--slurm", "partition=gpu", "--dry-run"], None),
        (["--executor", "slurm"], "error: --executor: slurm: no sbatch on PATH"),
    ],
)
def test_the_command_line_stops_before_writing_anything(tmp_path, monkeypatch, args, line):
    monkeypatch.setenv("PATH", "")  # no cluster here
    r = sweep(tmp_path, *args)
    if line is None:  # a dry run checks the options but asks no cluster
        assert r.exit_code == 0, r.output
        return
    assert r.exit_code == 2, r.output
    assert r.output.strip().splitlines()[-1].startswith(line), r.output
    assert not (tmp_path / "runs").exists()


def test_a_yaml_slurm_block_is_checked_like_the_command_line(tmp_path, monkeypatch):
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump({"slurm": {"time": 10, "cpus_per_task": "many"}}))
    r = CliRunner().invoke(cli, ["sweep", str(path), *SMALL, "--output", str(tmp_path / "runs")])
    assert r.exit_code == 2 and "slurm.cpus_per_task: must be an integer >= 1 (got 'many')" in r.output
    path.write_text(yaml.safe_dump({"slurm": "gpu"}))
    r = CliRunner().invoke(cli, ["sweep", str(path), *SMALL, "--output", str(tmp_path / "runs"), "--dry-run"])
    assert r.exit_code == 2 and "slurm: must be a mapping of options (got 'gpu')" in r.output
    assert not (tmp_path / "runs").exists()


def test_job_states_are_read_from_sacct_and_squeue_lines():
    submitit = pytest.importorskip("submitit")
    assert submitit
    from reglab.sweep.slurm import parse_states

    text = "12_0|COMPLETED\n12_0.batch|COMPLETED\n12_1|CANCELLED by 0\n12_[2-4,7%2]|PENDING\n13|RUNNING\n"
    assert parse_states(text) == {
        "12_0": "COMPLETED",
        "12_1": "CANCELLED",
        "12_2": "PENDING",
        "12_3": "PENDING",
        "12_4": "PENDING",
        "12_7": "PENDING",
        "13": "RUNNING",
    }


def test_a_job_ended_by_slurm_is_lost_at_once_one_that_may_come_back_after_a_grace(tmp_path):
    pytest.importorskip("submitit")
    from types import SimpleNamespace

    from reglab.sweep.slurm import SubmititExecutor

    class States:
        def __init__(self):
            self.states: dict[str, str] = {}
            self.at = 0.0

        def poll(self, ids):
            return self.states

    def job(name):
        return SimpleNamespace(paths=SimpleNamespace(result_pickle=tmp_path / f"{name}.pkl"))

    ex = SubmititExecutor.__new__(SubmititExecutor)
    ex.local, ex.states, ex._ended_at = False, States(), {}
    ex.jobs = {j: (job(j), f"hash{j}") for j in ("1_0", "1_1", "1_2")}

    def lost(at, **states):
        ex.states.at = at
        ex.states.states = {k.replace("j", "1_"): v for k, v in states.items()}
        return sorted(ex._ended_without_result())

    assert lost(100, j0="CANCELLED", j1="COMPLETED", j2="PREEMPTED") == ["1_0"]
    assert lost(110, j0="CANCELLED", j1="COMPLETED", j2="PENDING") == ["1_0"]  # requeued: not lost
    assert lost(116, j0="CANCELLED", j1="COMPLETED", j2="RUNNING") == ["1_0", "1_1"]
    (tmp_path / "1_0.pkl").write_bytes(b"")  # a result after all: reported from it, not as lost
    assert lost(200, j0="CANCELLED", j1="COMPLETED", j2="RUNNING") == ["1_1"]
