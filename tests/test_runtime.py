"""The allocator tuning of reglab.runtime (checked in fresh processes: it is process-wide)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

PROBE = """
import resource, sys, torch
from reglab.runtime import keep_freed_memory

def faults_of_big_temporaries():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(20):
        torch.ones(64 * 2**20 // 4).sum()  # a 64 MiB temporary (above glibc's 32 MiB mmap cap), freed at once
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

faults_of_big_temporaries()
default = faults_of_big_temporaries()
tuned = keep_freed_memory()
faults_of_big_temporaries()
after = faults_of_big_temporaries()
print(tuned, default, after)
"""


def probe(env_extra: dict) -> tuple[bool, int, int]:
    env = dict(os.environ, **env_extra)
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1] / "src") + os.pathsep + env.get("PYTHONPATH", "")
    out = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True
    ).stdout.split()
    return out[0] == "True", int(out[1]), int(out[2])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc tuning is Linux-only")
def test_freed_memory_is_reused_instead_of_faulted_in_again():
    tuned, default, after = probe({})
    assert tuned
    # 20 x 64 MiB = 320 000 fresh pages by default (each temporary a new mmap); reused after
    assert default > 100_000 and after < default / 20, (default, after)


def test_can_be_turned_off():
    tuned, _default, _after = probe({"REGLAB_KEEP_FREED_MEMORY": "0"})
    assert not tuned
