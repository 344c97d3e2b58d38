"""Landscape figures: the PNGs the landscape writer made (analysis/landscape/<name>.png) of
one representative run per setting (its first run that did not diverge), with captions from
the landscape metadata. Nothing is redrawn here; the PNG bytes are passed through.
"""

from __future__ import annotations

from .data import ReportData, Setting, landscape_meta, landscape_pngs
from .plotting import Fig

# ---------------------------------------------------------------------------------------------
# landscapes (the PNGs the landscape writer made, of one representative run per setting)
# ---------------------------------------------------------------------------------------------


def representative_run(s: Setting) -> str | None:
    ok = [r for r in s.runs if r not in s.diverged]
    return ok[0] if ok else None


def landscape_figures(d: ReportData) -> list[Fig]:
    out = []
    for s in d.settings:
        r = representative_run(s)
        if r is None:
            continue
        path = d.run_path(r)
        pngs = landscape_pngs(path)
        if not pngs:
            continue
        meta = landscape_meta(path)
        desc = []
        for k in ("dims", "directions", "normalization", "split", "examples", "resolution", "range"):
            if k in meta:
                desc.append(f"{k} = {meta[k]}")
        seed = s.seeds[s.runs.index(r)] if s.seeds else "?"
        what = {
            "contour": "contour plot of the loss",
            "surface": "surface plot of the loss",
            "line": "loss along one direction",
        }
        for name, png in pngs.items():
            cap = (
                f"Loss landscape around the final weights of run {r} (seed {seed}), the representative "
                f"run of setting '{s.label}': {what[name]} at w + α·d1 (+ β·d2) over a grid of α (β), "
                f"as drawn by the landscape writer (analysis/landscape/{name}.png)"
                + (f"; {', '.join(desc)}" if desc else "")
                + "."
            )
            out.append(Fig(f"landscape_s{s.index + 1}_{name}", f"Landscape: {s.label} ({name})", cap, png, "landscape"))
    return out
