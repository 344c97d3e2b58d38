"""The package's own habits: one version string, type information shipped, citation metadata."""

from __future__ import annotations

import importlib.metadata
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

import reglab

ROOT = Path(__file__).resolve().parents[1]


def test_version_is_written_once():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in pyproject["project"] and "version" in pyproject["project"]["dynamic"]
    assert pyproject["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "reglab.__version__"}
    assert re.fullmatch(r"\d+\.\d+\.\d+(\.dev\d+|rc\d+)?", reglab.__version__)
    assert importlib.metadata.version("reglab") == reglab.__version__
    out = subprocess.run([sys.executable, "-m", "reglab.cli", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == f"reglab, version {reglab.__version__}"


def test_py_typed_is_shipped():
    assert (Path(reglab.__file__).parent / "py.typed").is_file()
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "py.typed" in pyproject["tool"]["setuptools"]["package-data"]["reglab"]


def test_citation_and_changelog_match_the_version():
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0" and cff["title"] == "reglab"
    assert str(cff["version"]) == reglab.__version__
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert "## [Unreleased]" in changelog and f"## [{reglab.__version__}]" in changelog
