"""The README's Quick start runs as written: its shell block line by line and its Python block,
in a fresh directory holding only what a clone has (src/ for the presets), with `.venv/bin/reglab`
standing for this interpreter's reglab. Budgets are shortened by appending overrides (which win
over the file, variants included); the study line needs MNIST and is skipped without it."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHORTER = {
    "train": ["train.epochs=2"],
    "sweep": ["train.epochs=2"],
    "reproduce": ["train.iterations=3", "data.train_limit=300", "data.test_limit=200", "seed=0", "-j", "1"],
}


def quick_start_blocks() -> tuple[list[str], str]:
    text = (REPO / "README.md").read_text()
    section = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    sh = re.search(r"```sh\n(.*?)```", section, re.S)
    py = re.search(r"```python\n(.*?)```", section, re.S)
    assert sh and py, "the Quick start has a sh block and a python block"
    lines = sh.group(1).replace("\\\n", " ").splitlines()
    return [line for line in lines if line.strip()], py.group(1)


def test_the_quick_start_block_runs_as_written(tmp_path, real_data_dir_or_none):
    (tmp_path / "src").symlink_to(REPO / "src")
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    if real_data_dir_or_none is not None:
        env["REGLAB_DATA"] = str(real_data_dir_or_none)
    lines, python = quick_start_blocks()
    ran = []
    for line in lines:
        args = shlex.split(line, comments=True)
        if args[0] == ".venv/bin/reglab":
            if args[1] == "reproduce" and real_data_dir_or_none is None:
                continue  # needs MNIST: the real-data run of this test covers it
            args = [sys.executable, "-m", "reglab.cli", *args[1:], *SHORTER.get(args[1], [])]
        r = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, f"{line}\n{r.stdout}\n{r.stderr}"
        ran.append(line)
    assert len(ran) >= len(lines) - 1
    r = subprocess.run([sys.executable, "-c", python], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "my.yaml").exists() and any((tmp_path / "runs").iterdir())


@pytest.fixture
def real_data_dir_or_none():
    from conftest import REAL_DATA

    return Path(REAL_DATA) if REAL_DATA and Path(REAL_DATA).is_dir() else None
