"""Per-unit path norms and active units (study 4's sparsity measurements, seed-studies.md §4.9).

For a model with unit groups (a ReLU W-layer and the V-layer reading it, see
`reglab.models.structure`), unit j of a group has input weights w_j (row / filter j of W) and
output weights v_j (column j of V, V[:, j] for a conv):

- ``in_norm``   ‖w_j‖_2 (with include_bias: ‖[w_j, b_j]‖_2; default without, as study 4)
- ``out_norm``  ‖v_j‖_2
- ``path_norm`` ‖w_j‖_2 · ‖v_j‖_2 (`reglab.regularizers.path_norm.unit_path_norms`)

A unit is *active* if its path norm is > 0 exactly (study 4's count; exact zeros arise from a
proximal step, not from weight decay), and *active above threshold* if its path norm is >
`threshold`. Summary keys (names as in PathProx's report): units, active_units,
active_units_pct = 100 · active_units / units, active_units_thresh, active_units_pct_thresh,
path_norm_total = Σ over groups and units of path_norm, and the same per group under "groups".
PaperWN layers use their effective weights.
"""

from __future__ import annotations

import pandas as pd
import torch
from torch import nn

from ..models.structure import unit_groups
from ..regularizers.path_norm import unit_input_weights, unit_output_weights, unit_path_norms

UNIT_COLUMNS = ["group", "unit", "in_norm", "out_norm", "path_norm"]


@torch.no_grad()
def unit_sparsity(model: nn.Module, threshold: float = 0.0, include_bias: bool = False) -> tuple[pd.DataFrame, dict]:
    """(one row per unit: UNIT_COLUMNS; summary dict). A model without unit groups gives an empty
    frame and {"has_unit_groups": False, "note": ...}."""
    groups = unit_groups(model)
    if not groups:
        note = f"{type(model).__name__} declares no unit groups; per-unit path norms are undefined"
        return pd.DataFrame(columns=UNIT_COLUMNS), {"has_unit_groups": False, "note": note}
    frames = []
    per_group = {}
    for g in groups:
        in_norm = torch.linalg.vector_norm(unit_input_weights(g, include_bias).double(), dim=1)
        out_norm = torch.linalg.vector_norm(unit_output_weights(g).double(), dim=1)
        path = unit_path_norms(g, include_bias).double()
        frames.append(
            pd.DataFrame(
                {
                    "group": g.name,
                    "unit": range(g.size),
                    "in_norm": in_norm.cpu().numpy(),
                    "out_norm": out_norm.cpu().numpy(),
                    "path_norm": path.cpu().numpy(),
                }
            )
        )
        per_group[g.name] = {
            "units": g.size,
            "active_units": int((path > 0).sum()),
            "active_units_thresh": int((path > threshold).sum()),
            "path_norm": float(path.sum()),
        }
    units = pd.concat(frames, ignore_index=True)[UNIT_COLUMNS]
    n = len(units)
    active = int((units["path_norm"] > 0).sum())
    above = int((units["path_norm"] > threshold).sum())
    summary = {
        "has_unit_groups": True,
        "include_bias": include_bias,
        "threshold": float(threshold),
        "units": n,
        "active_units": active,
        "active_units_pct": 100.0 * active / n,
        "active_units_thresh": above,
        "active_units_pct_thresh": 100.0 * above / n,
        "path_norm_total": float(units["path_norm"].sum()),
        "groups": per_group,
    }
    return units, summary
