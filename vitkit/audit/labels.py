"""Likely label errors: out-of-fold predicted probabilities of a cross-validated linear classifier on image
features, handed to cleanlab's ``find_label_issues`` (confident learning; vitkit does not reimplement it).

Features: the run's model (its pre-logits embedding of the evaluation view) when a run is audited, else
pixels (each base image shrunk to ``PIXEL_SIDE`` x ``PIXEL_SIDE``): enough for classes that differ in
colour or layout, weak for real photos, where auditing a trained run finds far more.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch

from vitkit.audit.duplicates import Item
from vitkit.extras import require

PIXEL_SIDE = 16
DEFAULT_FOLDS = 5
PCA_COMPONENTS = 64  # the least number of components kept


def need_cleanlab() -> None:
    """cleanlab, or the one-line error naming ``pip install "vitkit[audit]"``."""
    require("audit", "cleanlab", what="vitkit audit (label errors; --no-labels skips them)")


def pixel_features(batches: Iterable[torch.Tensor]) -> np.ndarray:
    """``(N, C * 16 * 16)`` features: each base image shrunk (antialiased) to 16 x 16, in [0, 1]."""
    import torch.nn.functional as F  # noqa: N812

    out = []
    for batch in batches:
        small = F.interpolate(batch.float() / 255, size=(PIXEL_SIDE, PIXEL_SIDE), mode="bilinear", antialias=True)
        out.append(small.flatten(1).numpy())
    return np.concatenate(out).astype(np.float32)


@torch.no_grad()
def model_features(model: torch.nn.Module, data_meta: dict[str, Any], batches: Iterable[torch.Tensor]) -> np.ndarray:
    """A run's embedding of each base image: its evaluation transform (``eval_transform``), then the
    pre-logits features (``forward_head(..., pre_logits=True)``), or the logits of a model without them."""
    from vitkit.data.loaders import eval_transform

    transform = eval_transform(data_meta)
    model = model.eval()
    out = []
    for batch in batches:
        x = transform(batch, torch.zeros(len(batch), dtype=torch.long))[0]
        if hasattr(model, "forward_features") and hasattr(model, "forward_head"):
            feats = model.forward_head(model.forward_features(x), pre_logits=True)
        else:
            feats = model(x)
        out.append(feats.float().flatten(1).numpy())
    return np.concatenate(out)


def folds_for(labels: np.ndarray, folds: int) -> int:
    """The folds usable: ``folds``, at most the smallest class's count (0: some class has one image)."""
    smallest = int(np.bincount(labels).min()) if len(labels) else 0
    return min(folds, smallest) if smallest >= 2 else 0


def out_of_fold_probs(
    features: np.ndarray, labels: np.ndarray, folds: int = DEFAULT_FOLDS, seed: int = 0
) -> np.ndarray:
    """``(N, classes)`` probabilities, each from a logistic regression fitted on the other folds (stratified),
    on the features standardised and reduced by PCA to ``max(64, 2 x classes)`` components (ten times
    faster than all 768 pixel features, and as accurate out of fold)."""
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    classes = int(labels.max()) + 1
    components = min(features.shape[1], max(PCA_COMPONENTS, 2 * classes), len(labels) * (folds - 1) // folds)
    classifier = make_pipeline(
        StandardScaler(), PCA(components, random_state=seed), LogisticRegression(max_iter=1000, C=0.1)
    )
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return cross_val_predict(classifier, features, labels, cv=cv, method="predict_proba")


def label_issues(
    items: Sequence[Item], classes: Sequence[str], probs: np.ndarray, labels: np.ndarray
) -> list[dict[str, Any]]:
    """cleanlab's likely label errors, most likely first: ``path``, ``split``, ``given``, ``suggested`` (the
    most probable class out of fold), ``score`` (cleanlab's label quality, the out-of-fold probability of
    the given label: lower is more likely wrong)."""
    need_cleanlab()
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    found = find_label_issues(labels, probs, return_indices_ranked_by="self_confidence")
    quality = get_label_quality_scores(labels, probs, method="self_confidence")
    return [
        {
            "path": items[i].rel,
            "split": items[i].split,
            "given": classes[labels[i]],
            "suggested": classes[int(probs[i].argmax())],
            "score": round(float(quality[i]), 4),
        }
        for i in (int(i) for i in found)
    ]
