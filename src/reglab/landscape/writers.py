"""Landscape files: .npz arrays + JSON metadata, ParaView VTP surfaces, PNG figures.

- `write_npz`: arrays alphas, betas (2-D only), loss, acc, and for PCA directions
  trajectory (T x dims coordinates of the snapshots), trajectory_residual (T,) and
  trajectory_steps (T,); plus `meta`, a 0-d string array holding the JSON metadata.
  `read_npz` returns the arrays and the decoded metadata.
- `write_hdf5` (with h5py): X, Y, losses as the landscape libraries write them.
- `write_vtp`: ASCII VTK XML PolyData (ParaView): n_alpha * n_beta points (alpha, beta, z),
  point k = i * n_alpha + j for (alpha_j, beta_i); (n_alpha-1)(n_beta-1) quads
  (k, k+1, k+n_alpha+1, k+n_alpha); point data "zvalue" = z and cell data "averaged zvalue" =
  mean of a quad's 4 corner z. z = loss (`landscape.vtp`) or ln(loss + 0.1) (`landscape_log.vtp`).
  Non-finite losses (a diverging direction) are replaced by the largest finite loss so that
  the file stays loadable; the metadata says how many were replaced.
- PNGs (matplotlib Figure + Agg canvas, no pyplot global state): contour map with colorbar,
  minimum and theta* marked, PCA trajectory on top; 3-D surface; 1-D loss/accuracy line plot.

Every file is written atomically (temporary name, fsync, rename).
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..store import atomic_write_bytes
from .grid import GridResult

if TYPE_CHECKING:
    from matplotlib.typing import RcKeyType

LOG_OFFSET = 0.1
"""z of the log surface: ln(loss + LOG_OFFSET)."""

RC: dict[RcKeyType, Any] = {
    "font.size": 11,
    "axes.titlesize": 12,
    "axes.labelsize": 11,
    "xtick.labelsize": 10,
    "ytick.labelsize": 10,
    "legend.fontsize": 9,
}


# ----------------------------------------------------------------------------- npz


def write_npz(
    path: Path,
    grid: GridResult,
    meta: dict,
    trajectory: np.ndarray | None = None,
    trajectory_residual: np.ndarray | None = None,
    trajectory_steps: list[int] | None = None,
) -> None:
    arrays: dict[str, np.ndarray] = {"alphas": grid.alphas, "loss": grid.loss, "acc": grid.acc}
    if grid.betas is not None:
        arrays["betas"] = grid.betas
    if trajectory is not None:
        arrays["trajectory"] = np.asarray(trajectory, dtype=np.float64)
        if trajectory_residual is not None:
            arrays["trajectory_residual"] = np.asarray(trajectory_residual, dtype=np.float64)
        if trajectory_steps is not None:
            arrays["trajectory_steps"] = np.asarray(trajectory_steps, dtype=np.int64)
    arrays["meta"] = np.array(json.dumps(meta, sort_keys=True, default=_json_default))
    buf = io.BytesIO()
    # numpy's stub cannot tell that no key is savez's own allow_pickle keyword
    np.savez(buf, **arrays)  # type: ignore[arg-type]
    atomic_write_bytes(Path(path), buf.getvalue())


def write_hdf5(path: Path, grid: GridResult, meta: dict) -> bool:
    """The surface as the landscape libraries write it (losscape's data.h5): datasets X and Y
    (2-D: meshgrids of alpha and beta, shape (n_beta, n_alpha); 1-D: X only) and `losses`
    (shaped like X), plus `accuracies` and the metadata as a JSON attribute. Needs h5py (the
    optional `hdf5` extra); returns False, writing nothing, when it is not installed."""
    try:
        import h5py
    except ImportError:
        return False
    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        if grid.betas is None:
            f["X"] = grid.alphas
        else:
            x, y = np.meshgrid(grid.alphas, grid.betas)
            f["X"], f["Y"] = x, y
        f["losses"] = grid.loss
        f["accuracies"] = grid.acc
        f.attrs["meta"] = json.dumps(meta, sort_keys=True, default=_json_default)
    atomic_write_bytes(Path(path), buf.getvalue())
    return True


def read_npz(path: Path) -> dict:
    """{array name: ndarray, ..., "meta": dict}."""
    with np.load(path, allow_pickle=False) as z:
        out = {k: z[k].copy() for k in z.files if k != "meta"}
        out["meta"] = json.loads(str(z["meta"]))
    return out


def _json_default(o):
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


# ----------------------------------------------------------------------------- VTP


def finite_surface(z: np.ndarray) -> tuple[np.ndarray, int]:
    """z with non-finite entries replaced by the largest finite value (0 if none), and their count."""
    z = np.asarray(z, dtype=np.float64)
    bad = ~np.isfinite(z)
    if not bad.any():
        return z, 0
    fill = float(np.max(z[~bad])) if (~bad).any() else 0.0
    z = z.copy()
    z[bad] = fill
    return z, int(bad.sum())


def vtp_text(alphas: np.ndarray, betas: np.ndarray, z: np.ndarray) -> str:
    """The VTK XML PolyData document of the surface z[i, j] over (alphas[j], betas[i])."""
    na, nb = len(alphas), len(betas)
    z = np.asarray(z, dtype=np.float64)
    if z.shape != (nb, na):
        raise ValueError(f"z has shape {z.shape}, expected {(nb, na)}")
    xs, ys = np.meshgrid(alphas, betas)
    pts = np.stack([xs.ravel(), ys.ravel(), z.ravel()], axis=1)
    k = (np.arange(nb - 1)[:, None] * na + np.arange(na - 1)[None, :]).ravel()
    quads = np.stack([k, k + 1, k + na + 1, k + na], axis=1)
    cell_z = z.ravel()[quads].mean(axis=1)
    offsets = 4 * np.arange(1, len(quads) + 1)

    def nums(a, fmt="%.10g", per_line=6):
        flat = [fmt % v for v in np.asarray(a).ravel()]
        return "\n".join(" ".join(flat[i : i + per_line]) for i in range(0, len(flat), per_line))

    return "\n".join(
        [
            '<?xml version="1.0"?>',
            '<VTKFile type="PolyData" version="1.0" byte_order="LittleEndian" header_type="UInt64">',
            "  <PolyData>",
            f'    <Piece NumberOfPoints="{len(pts)}" NumberOfVerts="0" NumberOfLines="0" NumberOfStrips="0" '
            f'NumberOfPolys="{len(quads)}">',
            '      <PointData Scalars="zvalue">',
            '        <DataArray type="Float64" Name="zvalue" NumberOfComponents="1" format="ascii">',
            nums(z.ravel()),
            "        </DataArray>",
            "      </PointData>",
            '      <CellData Scalars="averaged zvalue">',
            '        <DataArray type="Float64" Name="averaged zvalue" NumberOfComponents="1" format="ascii">',
            nums(cell_z),
            "        </DataArray>",
            "      </CellData>",
            "      <Points>",
            '        <DataArray type="Float64" Name="Points" NumberOfComponents="3" format="ascii">',
            nums(pts, per_line=3),
            "        </DataArray>",
            "      </Points>",
            "      <Polys>",
            '        <DataArray type="Int64" Name="connectivity" format="ascii">',
            nums(quads, "%d", per_line=4),
            "        </DataArray>",
            '        <DataArray type="Int64" Name="offsets" format="ascii">',
            nums(offsets, "%d", per_line=12),
            "        </DataArray>",
            "      </Polys>",
            "    </Piece>",
            "  </PolyData>",
            "</VTKFile>",
            "",
        ]
    )


def write_vtp(path: Path, alphas: np.ndarray, betas: np.ndarray, z: np.ndarray) -> None:
    atomic_write_bytes(Path(path), vtp_text(alphas, betas, z).encode("ascii"))


# ----------------------------------------------------------------------------- PNG


def _figure(**kw):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(**kw)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=150)
    atomic_write_bytes(Path(path), buf.getvalue())


def _title(meta: dict) -> str:
    kind = meta.get("directions", "random")
    norm = meta.get("normalization_applied", meta.get("normalization", ""))
    dirs = "PCA directions (trajectory)" if kind == "pca" else f"random directions, {norm} normalization"
    return f"Loss landscape: {meta.get('split', '?')} split, {meta.get('examples', '?')} examples\n{dirs}"


def _axis_labels(meta: dict) -> tuple[str, str]:
    if meta.get("directions") == "pca":
        ex = meta.get("pca_explained") or []
        lab = [f"PC{k + 1} ({ex[k]:.1%} of trajectory variance)" if k < len(ex) else f"PC{k + 1}" for k in range(2)]
        return lab[0], lab[1]
    return r"$\alpha$ (direction 1)", r"$\beta$ (direction 2)"


def plot_contour(path: Path, grid: GridResult, meta: dict, trajectory: np.ndarray | None = None) -> None:
    """Filled contours of the loss over (alpha, beta), log-scaled colors when the loss spans
    more than a factor 50; star at the grid minimum, cross at theta*, PCA trajectory on top."""
    import matplotlib as mpl
    from matplotlib.colors import LogNorm

    assert grid.betas is not None  # 2-D grids only
    with mpl.rc_context(RC):
        z, _ = finite_surface(grid.loss)
        fig = _figure(figsize=(6.6, 5.4), layout="constrained")
        ax = fig.add_subplot()
        lo, hi = float(z.min()), float(z.max())
        if hi <= lo:
            hi = lo + 1e-12
        if lo > 0 and hi / lo > 50:
            levels = np.geomspace(lo, hi, 31)
            norm = LogNorm(lo, hi)
            clabel = "loss (log color scale)"
        else:
            levels, norm, clabel = np.linspace(lo, hi, 31), None, "loss"
        cs = ax.contourf(grid.alphas, grid.betas, z, levels=levels, norm=norm, cmap="viridis")
        ax.contour(grid.alphas, grid.betas, z, levels=levels[::3], norm=norm, colors="k", linewidths=0.4, alpha=0.5)
        cb = fig.colorbar(cs, ax=ax)
        if norm is None:
            from matplotlib.ticker import MaxNLocator

            cb.set_ticks([t for t in MaxNLocator(7).tick_values(lo, hi) if lo <= t <= hi])
        cb.set_label(clabel)
        i, j = np.unravel_index(int(np.argmin(z)), z.shape)
        ax.plot(
            [grid.alphas[j]],
            [grid.betas[i]],
            marker="*",
            ms=15,
            color="red",
            mec="white",
            mew=0.8,
            ls="none",
            label=f"grid minimum ({z[i, j]:.3g})",
        )
        ax.plot([0], [0], marker="P", ms=10, color="white", mec="black", ls="none", label="final weights")
        if trajectory is not None and len(trajectory):
            tr = np.asarray(trajectory)
            ax.plot(tr[:, 0], tr[:, 1], "-", color="orange", lw=1.5, label="training trajectory")
            ax.plot(tr[:, 0], tr[:, 1], "o", color="orange", mec="black", mew=0.5, ms=4)
            ax.plot(tr[0, 0], tr[0, 1], "s", color="orange", mec="black", ms=7, label="first snapshot")
        xl, yl = _axis_labels(meta)
        ax.set_xlabel(xl)
        ax.set_ylabel(yl)
        ax.set_title(_title(meta))
        ax.legend(loc="upper right", framealpha=0.85)
        _save(fig, path)


def plot_surface(path: Path, grid: GridResult, meta: dict) -> None:
    """3-D surface of the loss over (alpha, beta)."""
    import matplotlib as mpl

    assert grid.betas is not None  # 2-D grids only
    with mpl.rc_context(RC):
        z, _ = finite_surface(grid.loss)
        fig = _figure(figsize=(7.2, 5.8))
        ax = fig.add_subplot(projection="3d")
        xs, ys = np.meshgrid(grid.alphas, grid.betas)
        surf = ax.plot_surface(
            xs,
            ys,
            z,
            cmap="viridis",
            vmin=float(z.min()),
            vmax=float(z.max()),
            linewidth=0,
            antialiased=True,
            rcount=len(grid.betas),
            ccount=len(grid.alphas),
        )
        xl, yl = _axis_labels(meta)
        ax.set_xlabel(xl.split(" (")[0] if meta.get("directions") == "pca" else xl, labelpad=8)
        ax.set_ylabel(yl.split(" (")[0] if meta.get("directions") == "pca" else yl, labelpad=8)
        ax.set_zlabel("loss", labelpad=8)
        ax.view_init(elev=30, azim=-60)
        cb = fig.colorbar(surf, ax=ax, shrink=0.6, pad=0.12)
        cb.set_label("loss")
        ax.set_title(_title(meta), pad=12)
        fig.subplots_adjust(left=0.02, right=0.95, bottom=0.05, top=0.9)
        _save(fig, path)


def plot_line(path: Path, grid: GridResult, meta: dict) -> None:
    """Loss (left axis) and accuracy (right axis) along the 1-D line."""
    import matplotlib as mpl

    with mpl.rc_context(RC):
        fig = _figure(figsize=(6.6, 4.4), layout="constrained")
        ax = fig.add_subplot()
        l1 = ax.plot(grid.alphas, grid.loss, "-o", ms=3, color="C0", label="loss")
        ax.set_xlabel("PC1 coordinate" if meta.get("directions") == "pca" else r"$\alpha$ (direction 1)")
        ax.set_ylabel("loss", color="C0")
        ax.axvline(0, color="gray", lw=0.8, ls=":", label="final weights")
        ax2 = ax.twinx()
        l2 = ax2.plot(grid.alphas, grid.acc, "--s", ms=3, color="C1", label="accuracy")
        ax2.set_ylabel("accuracy", color="C1")
        ax2.set_ylim(-0.02, 1.02)
        hs = l1 + l2 + [ax.lines[-1]]
        ax.legend(hs, [h.get_label() for h in hs], loc="upper center", framealpha=0.85)
        ax.set_title(_title(meta).replace("random directions", "random direction"))
        _save(fig, path)
