"""How well a detector tells perturbed pictures from clean ones: accuracy, precision, recall
(at a threshold) and AUROC with torchmetrics, and the same without the twins an attack left
unchanged (they are, in effect, clean pictures)."""
from __future__ import annotations

import numpy as np
import torch


def detection_metrics(p_perturbed: np.ndarray, labels: np.ndarray,
                      threshold: float = 0.5) -> dict:
    """Binary accuracy, precision, recall (at `threshold`) and AUROC, with torchmetrics."""
    from torchmetrics.classification import (
        BinaryAccuracy,
        BinaryAUROC,
        BinaryPrecision,
        BinaryRecall,
    )

    p, y = torch.as_tensor(p_perturbed, dtype=torch.float32), torch.as_tensor(labels).long()
    metrics = {"accuracy": BinaryAccuracy(threshold), "precision": BinaryPrecision(threshold),
               "recall": BinaryRecall(threshold), "auc": BinaryAUROC()}
    return {k: float(m(p, y)) for k, m in metrics.items()}


def unchanged_twins(clean: torch.Tensor, perturbed: torch.Tensor, tolerance: int) -> np.ndarray:
    """Twins whose every pixel is within `tolerance`/255 of their clean picture, as the detector
    sees them. Fawkes returns its start when no iterate kept to the budget: such a twin is in
    effect a clean picture, and no detector can tell the two apart."""
    diff = (perturbed.int() - clean.int()).abs().flatten(1).amax(1)
    return (diff <= tolerance).numpy()


def changed_scores(p: np.ndarray, labels: np.ndarray, unchanged: np.ndarray,
                   threshold: float) -> dict:
    """Metrics over the clean pictures and the twins the attack did change (`<metric>_changed`),
    with the share it left unchanged: tells a detector's misses from the attack's no-ops."""
    keep = np.r_[np.ones(len(labels) - len(unchanged), bool), ~unchanged]
    out = {"unchanged_share": float(unchanged.mean()) if len(unchanged) else 0.0}
    if (~unchanged).any():
        scores = detection_metrics(p[keep], labels[keep], threshold)
        out.update({f"{k}_changed": scores[k] for k in ("recall", "auc")})
    return out
