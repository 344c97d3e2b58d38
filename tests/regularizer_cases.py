"""One row per registered regularizer: the only test change a new regularizer needs.

Each row is a term and the training settings it is tried under. The rows feed:

- tests/reference_runs.py: a reference run per regularizer (its numbers pinned, `lam`);
- tests/test_train.py: every regularizer visibly changes training (`strong_lam`);
- tests/test_vectorized.py: every regularizer that declares `vectorizes` trains the same in a
  group as one by one (the group's lambdas are its own, LAM filled in per run).

tests/test_regularizer_cases.py fails, naming the regularizer, when a registered one has no
row. After adding a row, record its reference run: `.venv/bin/python tests/reference_runs.py`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Case:
    term: str
    """The term in YAML, with LAM where its lambda goes."""
    lam: float
    """Lambda of its reference run (two epochs of the reference MLP)."""
    strong_lam: float
    """A lambda that visibly moves one epoch of training away from the unregularized run."""
    lr: float = 0.1
    overrides: tuple[str, ...] = ()
    """Optimizer or model settings of the row (SGD, momentum, Nesterov and Adam spread over them)."""

    def with_lam(self, lam: float) -> str:
        return self.term.replace("LAM", repr(lam))


MOMENTUM = ("optim.momentum=0.9",)
ADAM = ("optim.name=adam",)

REGULARIZER_CASES: dict[str, Case] = {
    "decoupled_weight_decay": Case("{name: decoupled_weight_decay, lam: LAM}", 0.05, 0.5, 0.01, ADAM),
    "frobenius": Case("{name: frobenius, lam: LAM}", 0.01, 0.5, overrides=(*MOMENTUM, "optim.nesterov=true")),
    "gradient_norm": Case("{name: gradient_norm, lam: LAM}", 0.1, 0.5),
    "graph_energy": Case("{name: graph_energy, lam: LAM}", 0.01, 0.5),
    "jacobian_nuclear": Case("{name: jacobian_nuclear, lam: LAM, split: 2}", 0.1, 0.5),
    "l2": Case("{name: l2, lam: LAM}", 0.01, 0.5),
    "l2_mul": Case("{name: l2_mul, lam: LAM}", 0.001, 0.01, 0.01, ADAM),
    "l2_sum": Case("{name: l2_sum, lam: LAM, depth_normalization: mean}", 0.01, 0.5, overrides=MOMENTUM),
    "nuclear_norm": Case("{name: nuclear_norm, lam: LAM}", 0.01, 0.5),
    "path_energy": Case("{name: path_energy, lam: LAM}", 5.0, 50.0, overrides=MOMENTUM),
    "path_norm": Case("{name: path_norm, lam: LAM}", 0.01, 0.5, 0.01, ADAM),
    "pathprox": Case("{name: pathprox, lam: LAM}", 0.05, 0.5),
    # a square layer (32 x 32): its term is the symmetric part's |eigenvalues|, not singular values
    "spectral_energy": Case("{name: spectral_energy, lam: LAM}", 0.01, 0.5, overrides=("model.widths=[20,32,32,4]",)),
}
