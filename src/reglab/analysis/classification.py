"""How a trained classifier errs, per split (study 1's AWN outputs, for every classification run):

- confusion matrix C[i, j] = #examples of true class i predicted as j (binary: classes −1 and +1,
  in that order; prediction sign(f), f = 0 counted as neither, so as wrong: reglab's accuracy rule);
- F1: binary, the F1 of the positive class (+1) as study 1 computed it; classes, the macro F1
  (the mean over classes of 2·TP / (2·TP + FP + FN), a class absent from both truth and prediction
  left out);
- misclassified examples: indices into the split's stored order;
- binary: the output confidence mean |f(x)| (study 1's "confidence").

Train uses the stored (possibly noisy) labels, like the margins.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..data import TaskData
from ._common import batched_outputs, eval_mode, is_binary_output, split_examples


def confusion(pred: np.ndarray, truth: np.ndarray, classes: np.ndarray) -> np.ndarray:
    index = {c: i for i, c in enumerate(classes.tolist())}
    c = np.zeros((len(classes), len(classes)), dtype=np.int64)
    for t, p in zip(truth.tolist(), pred.tolist()):
        if p in index:  # a binary output of exactly 0 predicts no class
            c[index[t], index[p]] += 1
    return c


def f1_scores(c: np.ndarray) -> np.ndarray:
    """Per-class F1 from a confusion matrix (NaN for a class neither true nor predicted)."""
    tp = np.diag(c).astype(float)
    fp = c.sum(axis=0) - tp
    fn = c.sum(axis=1) - tp
    denom = 2 * tp + fp + fn
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, 2 * tp / denom, np.nan)


@torch.no_grad()
def classification_report(model: nn.Module, data: TaskData, limit: int | None = None) -> dict[str, dict]:
    """{split: {"classes", "confusion", "f1", "misclassified", ["confidence"]}} for each split."""
    out: dict[str, dict] = {}
    with eval_mode(model):
        for split, x, y in split_examples(data, ("train", "val", "test"), limit):
            f = batched_outputs(model, x)
            truth = y.cpu().numpy()
            if is_binary_output(f):
                pred = torch.sign(f).cpu().numpy().astype(truth.dtype)
                classes = np.array([-1, 1], dtype=truth.dtype)
            else:
                pred = f.argmax(dim=-1).cpu().numpy()
                classes = np.arange(f.shape[-1])
            c = confusion(pred, truth, classes)
            per_class = f1_scores(c)
            entry = {
                "classes": classes.tolist(),
                "confusion": c.tolist(),
                "f1": float(per_class[1]) if is_binary_output(f) else float(np.nanmean(per_class)),
                "misclassified": np.flatnonzero(pred != truth).astype(np.int64),
            }
            if is_binary_output(f):
                entry["confidence"] = float(f.abs().mean())
            out[split] = entry
    return out
