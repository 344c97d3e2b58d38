"""Small configs for fast end-to-end tests (synthetic data, tiny MLPs)."""

from __future__ import annotations

from reglab.config import load_config

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
    return load_config(None, [*SMALL, f"output={tmp_path}", *overrides])
