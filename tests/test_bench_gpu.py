"""The GPU session's tools on a CPU machine: bench/bench_gpu.py in tiny mode (through a dry run of
bench/gpu_session.sh), bench_gpu.py outside tiny mode without CUDA, and bench/merge_results.py.

Everything writes into tmp_path, never to the committed bench/results.json or README.md.
Nothing here asserts a time.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "bench"
sys.path.insert(0, str(BENCH))

import common  # noqa: E402
import merge_results  # noqa: E402
import report  # noqa: E402

GROUPS = {"gpu_loop", "gpu_precision", "gpu_vectorized", "gpu_penalties", "gpu_nuclear"}
DEVICE_FIELDS = {"device_name", "torch_version", "cuda_version", "cudnn_version", "tree_digest"}


def bench_env(**extra: str) -> dict:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in (common.RESULTS_ENV, common.RUN_ID_ENV, common.TINY_ENV, "REGLAB_DATA", "OUT")
    }
    return {**env, **extra}


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """bench/gpu_session.sh as a CPU dry run: tiny mode, OUT in tmp_path, no wheels."""
    out = tmp_path_factory.mktemp("out")
    env = bench_env(
        **{common.TINY_ENV: "1"}, OUT=str(out), PYTHON=sys.executable, REGLAB_GPU_WHEELS=str(out / "no-wheels")
    )
    proc = subprocess.run(["bash", str(BENCH / "gpu_session.sh")], env=env, capture_output=True, text=True, timeout=600)
    return out, proc


@pytest.mark.slow
def test_gpu_session_dry_run_writes_versions_log_and_results(dry_run):
    out, proc = dry_run
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == ["bench_gpu.log", "results.json", "versions.txt"]
    versions = (out / "versions.txt").read_text()
    for line in ("python: ", "torch: ", f"reglab: 0.1.0 from {REPO / 'src'}", "  pydantic: ", "nvidia-smi: "):
        assert line in versions, versions
    assert "MISSING" not in versions
    log = (out / "bench_gpu.log").read_text()
    assert "bench_gpu on cpu" in log and "(tiny mode)" in log and "FAILED" not in log
    assert "gpu_session: bench_gpu.py exited with status 0" in proc.stdout


@pytest.mark.slow
def test_bench_gpu_in_tiny_mode_writes_entries_of_every_group_with_device_info(dry_run):
    out, proc = dry_run
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    machines = json.loads((out / "results.json").read_text())["machines"]
    assert list(machines) == [common.machine_info()["key"]]
    entries = machines[common.machine_info()["key"]]["benchmarks"]
    by_group: dict[str, list[dict]] = {}
    for e in entries:
        by_group.setdefault(e["group"], []).append(e)
    assert set(by_group) == GROUPS
    assert len(by_group["gpu_loop"]) == 4 and len(by_group["gpu_precision"]) == 8  # 4 models; bf16, channels_last
    assert len(by_group["gpu_vectorized"]) == 2 and len(by_group["gpu_nuclear"]) == 4
    assert all(e["name"].startswith("gpu penalty: ") for e in by_group["gpu_penalties"])
    for e in entries:
        assert e["benchmark"] == "bench_gpu" and e["tiny"] is True and e["met"] is None, e
        assert set(e) >= DEVICE_FIELDS and e["device_name"].startswith("cpu: "), e
        assert e["torch_version"] == torch.__version__
        assert isinstance(e["value"], float) and e["value"] > 0 and e["unit"] in ("s", "ms")


def test_without_cuda_outside_tiny_mode_it_writes_nothing_and_make_bench_calls_it_skipped(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    results = tmp_path / "results.json"
    env = bench_env(**{common.RESULTS_ENV: str(results)})
    proc = subprocess.run(
        [sys.executable, str(BENCH / "bench_gpu.py")], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == common.SKIPPED_STATUS, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines() == [
        "bench_gpu: needs a CUDA GPU (torch.cuda.is_available() is False): nothing measured, nothing written"
    ]
    assert not results.exists()
    # what `make bench` runs: skipped, not failed, so a CPU machine's `make bench` passes
    proc = subprocess.run(
        [sys.executable, str(BENCH / "run_all.py"), "--no-settle", "gpu"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "bench_gpu                skipped (not for this machine)" in proc.stdout
    assert not results.exists()


GPU_KEY = "NVIDIA H200 + Some CPU x16"


def gpu_results(name: str, tiny: bool = False) -> dict:
    """A results file as a GPU session returns it: one CUDA machine slot, entries without a
    commit (the GPU machine's copy has no .git) but with the tree's digest."""
    info = {
        "key": GPU_KEY,
        "cpu": "Some CPU",
        "cpus": 16,
        "cuda": "NVIDIA H200",
        "python": "3.12.3",
        "torch": "2.11.0+cu130",
        "platform": "Linux-6.18-x86_64-with-glibc2.39",
    }
    e = common.entry(name, 1.5, 1.4, "bare loop", "s", "ratio <= 1.1", True)
    e.update(
        group="gpu_loop",
        benchmark="bench_gpu",
        threads=16,
        measured_at="2026-12-02T10:00:00+00:00",
        run_id="gpu-run",
        commit=None,
        dirty=None,
        machine=GPU_KEY,
        loadavg_start=1.0,
        loadavg_end=1.2,
        busy=False,
        tiny=tiny,
        device_name="NVIDIA H200",
        torch_version="2.11.0+cu130",
        cuda_version="13.0",
        cudnn_version=91200,
        tree_digest=merge_results.tree_digest(),
    )
    return {"schema": common.SCHEMA, "machines": {GPU_KEY: {"machine": info, "benchmarks": [e]}}}


def test_merge_results_folds_in_a_gpu_slot_and_keeps_the_cpu_slots(tmp_path):
    committed = common.COMMITTED_RESULTS.read_bytes()
    readme_before = report.README.read_bytes()
    into, readme = tmp_path / "results.json", tmp_path / "README.md"
    shutil.copy(common.COMMITTED_RESULTS, into)
    shutil.copy(report.README, readme)
    before = json.loads(into.read_text())["machines"]
    gpu = tmp_path / "gpu.json"
    gpu.write_text(json.dumps(gpu_results("gpu loop: first")))

    assert merge_results.main([str(gpu), "--into", str(into), "--readme", str(readme)]) == 0

    merged = json.loads(into.read_text())["machines"]
    assert {k: v for k, v in merged.items() if k != GPU_KEY} == before  # the CPU slots untouched
    (e,) = merged[GPU_KEY]["benchmarks"]
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    assert e["name"] == "gpu loop: first" and e["commit"] == head and isinstance(e["dirty"], bool)
    table = readme.read_text()
    assert f"**{GPU_KEY}**" in table and "gpu loop: first" in table and "NVIDIA H200" in table
    assert report.main(["--check", "--results", str(into), "--readme", str(readme)]) == 0

    # a second GPU file replaces the GPU machine's groups it holds, and only those
    gpu.write_text(json.dumps(gpu_results("gpu loop: second")))
    assert merge_results.main([str(gpu), "--into", str(into), "--no-report"]) == 0
    merged = json.loads(into.read_text())["machines"]
    assert [e["name"] for e in merged[GPU_KEY]["benchmarks"]] == ["gpu loop: second"]
    assert {k: v for k, v in merged.items() if k != GPU_KEY} == before
    other = gpu_results("gpu nuclear: a size")
    other["machines"][GPU_KEY]["benchmarks"][0]["group"] = "gpu_nuclear"
    gpu.write_text(json.dumps(other))
    assert merge_results.main([str(gpu), "--into", str(into), "--no-report"]) == 0
    merged = json.loads(into.read_text())["machines"]
    assert [e["name"] for e in merged[GPU_KEY]["benchmarks"]] == ["gpu loop: second", "gpu nuclear: a size"]

    # a dry run's tiny entries are refused
    gpu.write_text(json.dumps(gpu_results("gpu loop: tiny", tiny=True)))
    with pytest.raises(SystemExit, match="tiny-mode entries"):
        merge_results.main([str(gpu), "--into", str(into), "--no-report"])
    names = [e["name"] for e in json.loads(into.read_text())["machines"][GPU_KEY]["benchmarks"]]
    assert names == ["gpu loop: second", "gpu nuclear: a size"]

    assert common.COMMITTED_RESULTS.read_bytes() == committed and report.README.read_bytes() == readme_before
