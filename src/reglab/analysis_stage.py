"""The stage after training: what the final network is (margins, spectra, sparsity under
analysis/) and, when the config asks, the loss landscape around it.

It runs on a trained run's model, after its trainer has finished (reglab.train.run and the
vectorized groups call it), and adds its scalars to the summary's final metrics. Training's end
state is checkpointed before, so a run killed here resumes straight into this stage.
"""

from __future__ import annotations

from .build import Setup
from .runtime import deterministic_algorithms
from .store import RunDir


def analyze_trained(setup: Setup, rd: RunDir, summary: dict) -> None:
    """Write analysis/ (and analysis/landscape/) for a finished run and merge the analysis's
    scalars into summary["final"]. Runs that did not finish ("diverged") are left as they are.
    Under train.deterministic with deterministic algorithms, as training."""
    if summary["status"] != "done":
        return
    with deterministic_algorithms(setup.cfg.train.deterministic, setup.device):
        _analyze(setup, rd, summary)


def _analyze(setup: Setup, rd: RunDir, summary: dict) -> None:
    from .analysis import analyze_final

    ac = setup.cfg.analysis
    out = rd.path / "analysis"
    step = summary["steps"]
    bias_in_units = any(getattr(t.reg.options, "regularize_bias", False) for t in setup.terms)
    summary["final"].update(
        analyze_final(setup.model, setup.data, ac, out, step, include_bias=bias_in_units, sync=rd.sync)
    )
    if ac.landscape is not None:
        from .landscape.run_landscape import landscape_in_run

        meta = {
            "run_hash": rd.path.name,
            "run_dir": str(rd.path),
            "step": step,
            "model": setup.cfg.model.name,
            "dataset": setup.cfg.data.dataset,
        }
        landscape_in_run(
            rd,
            setup.model,
            setup.data,
            setup.loss_fn,
            ac.landscape,
            out / "landscape",
            meta,
            setup.cfg.train.eval_batch_size,
            setup.device,
        )
