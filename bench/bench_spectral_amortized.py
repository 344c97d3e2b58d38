"""Amortized spectral penalties (``refresh_every``): per-step cost against no regularizer, and
how far the logged value (the lower bound between refreshes) is from the exact value.

Models, data and the timed step are bench_penalties.py's (its `Variant`: the real trainer step
`OneModelStep.train_on` of a `Setup` from `reglab.build.prepare`, lam 1e-4, SGD, 2 threads): the
MNIST-sized MLP 784-128-128-10 at batch 128 and HarderNet at batch 16 (graph_energy on the MLP
only: it needs a chain of Linear layers).

Cost. An amortized penalty does its exact work (an eigh per layer) once every k steps, inside
`after_step`, and a cheap linear form on the others, so the median of single steps (what
bench_penalties.py reports) would leave the refreshes out. Here steps are timed in blocks of k
(each block holds exactly one refresh), alternating with blocks of k baseline steps, until about
150 steps of each are timed; value and baseline are the medians of the blocks' mean step times.
The exact route (refresh_every 1) is measured the same way in the same run, as a reference row.
Target: ratio <= 1.5 for the amortized rows.

Value error. A second trainer of each amortized variant trains `ERROR_STEPS` steps on
successive batches of its data; before each step the exact penalty is computed at the step's
weights (untimed) and compared with the value the step logged: the entry's `value_rel_error_max`
and `value_rel_error_mean` are max and mean of (exact - logged) / exact over those steps (0 on
refresh steps; >= 0 up to rounding, the logged value is a lower bound). This is the error at the
same weights; the trajectory itself also differs from an exactly regularized run's, which only
a training comparison (accuracy over seeds) measures.

Arguments: regularizer labels (e.g. "nuclear_norm (refresh_every 16)") measure just those and
replace just those entries. Tiny mode ($REGLAB_BENCH_TINY=1): refresh_every 4 only, MLP batch 16
and HarderNet batch 4, two blocks, 6 error steps, no exact rows.
"""

from __future__ import annotations

import statistics
import sys
import time

import torch

from bench_penalties import MODELS, Variant
from common import Session, entry, print_table, tiny
from reglab.regularizers import StepContext

EVERY = [4] if tiny() else [4, 16, 32]
CONFIGS = [("mlp", 16), ("hardernet", 4)] if tiny() else [("mlp", 128), ("hardernet", 16)]
TARGET_STEPS = 8 if tiny() else 150  # timed steps of each side, about
WARMUP_BLOCKS = 1 if tiny() else 2
ERROR_STEPS = 6 if tiny() else 200
PENALTIES = ["nuclear_norm", "spectral_energy", "graph_energy"]
CHAIN_ONLY = {"graph_energy"}
TARGET = ("ratio <= 1.5 (amortized)", 1.5)
REFERENCE = ("reference: exact every step", None)


def variants() -> list[tuple[str, dict, tuple[str, float | None]]]:
    """(label, regularizer config, target) of every measured row."""
    out = []
    for name in PENALTIES:
        if not tiny():
            out.append((f"{name} (exact)", {"name": name}, REFERENCE))
        for k in EVERY:
            out.append((f"{name} (refresh_every {k})", {"name": name, "refresh_every": k}, TARGET))
    return out


def block_ms(v: Variant, k: int) -> float:
    """Mean ms per step of k consecutive steps."""
    t0 = time.perf_counter()
    v.run(k)
    return 1e3 * (time.perf_counter() - t0) / k


def paired_blocks(base: Variant, v: Variant, k: int) -> tuple[float, float]:
    """(ms per step of v, of base): medians over alternating blocks of k steps each."""
    for _ in range(WARMUP_BLOCKS):
        block_ms(base, k)
        block_ms(v, k)
    blocks = max(2, -(-TARGET_STEPS // k))
    tb, tv = [], []
    for _ in range(blocks):
        tb.append(block_ms(base, k))
        tv.append(block_ms(v, k))
    return statistics.median(tv), statistics.median(tb)


def value_errors(label: str, model: str, batch: int, spec: dict) -> dict:
    """Relative error of the logged penalty against the exact one at the same weights, over a
    short training run on successive batches (module docstring)."""
    v = Variant(label, model, batch, spec)
    reg = v.setup.regularization.terms[0].reg
    x_all, y_all = v.setup.data.x_train, v.setup.data.y_train
    n = x_all.shape[0] // batch
    errors = []
    for step in range(ERROR_STEPS):
        x, y = x_all[(step % n) * batch :][:batch], y_all[(step % n) * batch :][:batch]
        with torch.no_grad():
            exact = float(reg.penalty(v.setup.model, None))  # no step: the exact value
            # what the step's penalty (and its log row) gives at these weights
            logged = float(reg.penalty(v.setup.model, StepContext(step, x, y, x, torch.zeros(()))))
        v.stepper.train_on(x, y, step, 0)
        errors.append((exact - logged) / exact)
    return {
        "value_rel_error_max": max(errors),
        "value_rel_error_mean": statistics.fmean(errors),
        "error_steps": ERROR_STEPS,
        "refreshes": reg.report(v.setup.model).get("refreshes"),
    }


def measure(model: str, batch: int, only: set[str] | None) -> list[dict]:
    title = MODELS[model]["title"]
    rows = [r for r in variants() if only is None or r[0] in only]
    if MODELS[model]["image"] is not None:
        rows = [r for r in rows if r[1]["name"] not in CHAIN_ONLY]
    if tiny():
        rows = [r for r in rows if r[1]["name"] != "spectral_energy"] if model == "mlp" else rows[:1]
    base = Variant("none", model, batch, None)
    entries = []
    for label, spec, (text, bound) in rows:
        k = spec.get("refresh_every", 1)
        v = Variant(label, model, batch, spec)
        # exact rows: blocks as long as the amortized ones' longest, for the same timing noise
        value, baseline = paired_blocks(base, v, k if k > 1 else max(EVERY))
        ratio = value / baseline
        extra: dict = {"refresh_every": k}
        if k > 1:
            extra |= value_errors(label, model, batch, spec)
        met = None if bound is None else ratio <= bound
        name = f"{label} | {title}, batch {batch}"
        entries.append(
            entry(name, value, baseline, f"no regularizer | {title}, batch {batch}", "ms", text, met, **extra)
        )
        err = (
            f"; value error max {extra['value_rel_error_max']:.2e}, mean {extra['value_rel_error_mean']:.2e}"
            if k > 1
            else ""
        )
        print(f"  {name}: {value:.3g} ms vs {baseline:.3g} ms (x{ratio:.2f}{err})", flush=True)
    return entries


def main(argv: list[str]) -> None:
    session = Session()
    torch.set_num_threads(2)
    only = set(argv) or None
    unknown = (only or set()) - {label for label, *_ in variants()}
    if unknown:
        raise SystemExit(f"bench_spectral_amortized: unknown labels {sorted(unknown)}; see variants()")
    entries = []
    for model, batch in CONFIGS:
        entries += measure(model, batch, only)
    entries = session.write(entries, "spectral_amortized", subset=only is not None)
    title = (
        f"ms per training step vs no regularizer (SGD, {torch.get_num_threads()} threads, medians of blocks of "
        "refresh_every steps alternating with the baseline's)"
    )
    print_table(entries, title)
    for e in entries:
        if "value_rel_error_max" in e:
            print(
                f"  {e['name']}: value error vs exact max {e['value_rel_error_max']:.2e}, "
                f"mean {e['value_rel_error_mean']:.2e} over {e['error_steps']} steps ({e['refreshes']:.0f} refreshes)"
            )


if __name__ == "__main__":
    main(sys.argv[1:])
