"""docs/api.md is the reference generated from the public API's docstrings, and stays current."""

from __future__ import annotations

import runpy
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_the_api_reference_is_generated_from_the_current_docstrings():
    reference = runpy.run_path(str(REPO / "tools" / "api_reference.py"))["reference"]()
    committed = (REPO / "docs" / "api.md").read_text()
    assert committed == reference, "docs/api.md is stale: run .venv/bin/python tools/api_reference.py > docs/api.md"
    import reglab

    for name in reglab.__all__:  # every public name is documented
        if name != "__version__":
            assert f"`{name}" in reference, name
    assert "Regularization.finish_step" in reference and "## `term(" in reference
