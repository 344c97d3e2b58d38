"""Small configs for fast end-to-end tests (synthetic data, tiny MLPs)."""

from __future__ import annotations

from reglab.config import merge, parse_overrides
from reglab.regularizers import REGULARIZERS, Regularizer
from reglab.validation import validate

SMALL = [
    "data.dataset=synthetic",
    "data.synthetic.n_train=256",
    "data.synthetic.n_test=128",
    "data.synthetic.dim=20",
    "data.synthetic.classes=4",
    "model.name=mlp",
    "model.widths=[20,32,4]",
    "optim.lr=0.1",
    "train.batch_size=32",
    "train.epochs=2",
    "train.progress=false",
]


def small_config(tmp_path, *overrides: str):
    """SMALL as the base config and the test's overrides over it (two sources, so an override of
    train.iterations replaces SMALL's epochs)."""
    base = merge({}, parse_overrides([*SMALL, f"output={tmp_path}"]))
    return validate(merge(base, parse_overrides(list(overrides))))


class _Fault:
    """Switches for the test-only `_test_fault` regularizer (module globals, reset by tests)."""

    nan_at: int | None = None
    raise_at: int | None = None


if "_test_fault" not in REGULARIZERS:

    @REGULARIZERS.register("_test_fault")
    class FaultInjector(Regularizer):
        """A zero penalty that turns NaN or raises at a chosen step (tests only)."""

        name = "_test_fault"

        def penalty(self, model, ctx):
            if _Fault.raise_at is not None and ctx.step == _Fault.raise_at:
                raise RuntimeError("injected crash")
            zero = sum(p.sum() for p in model.parameters()) * 0.0
            if _Fault.nan_at is not None and ctx.step == _Fault.nan_at:
                return zero + float("nan")
            return zero
