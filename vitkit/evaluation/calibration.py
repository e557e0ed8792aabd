"""Calibration: expected calibration error, reliability bins, and temperature scaling fitted on val logits.

Temperature scaling (Guo et al., 2017, "On Calibration of Modern Neural Networks") divides a model's
logits by one scalar ``T`` before the softmax: the argmax, so the accuracy, is unchanged; ``T > 1``
softens over-confident probabilities, ``T < 1`` sharpens under-confident ones. ``T`` minimises the
negative log-likelihood of the validation split's logits (LBFGS on ``log T``). A run stores it with its
weights (``checkpoints/best.pt`` key ``temperature``, ``model.safetensors`` metadata ``temperature``);
a run written before it has none and loads as ``T = 1``.

ECE is the top-1 expected calibration error over ``ECE_BINS`` equal-width confidence bins
``(0, 1/15], ..., (14/15, 1]``: the mean over images of ``|accuracy - confidence|`` of their bin.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

ECE_BINS = 15
TEMPERATURE_RANGE = (0.05, 20.0)  # a val split the model gets all right pushes T to 0: keep it bounded


def temperature_of(state: Mapping[str, Any]) -> float:
    """The temperature a checkpoint or safetensors metadata holds; 1.0 for runs written before calibration."""
    value = state.get("temperature")
    return 1.0 if value is None else float(value)


def fit_temperature(logits: torch.Tensor, targets: torch.Tensor) -> float:
    """The ``T`` that minimises ``cross_entropy(logits / T, targets)`` (LBFGS on ``log T``), within
    ``TEMPERATURE_RANGE``; 1.0 for an empty split."""
    if len(targets) == 0:
        return 1.0
    logits, targets = logits.detach().double().cpu(), targets.detach().long().cpu()
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=1.0, max_iter=100, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(logits / log_t.exp(), targets)
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    low, high = TEMPERATURE_RANGE
    temperature = float(log_t.detach().exp())
    return min(max(temperature, low), high) if temperature == temperature else 1.0  # NaN: leave the logits


def calibrated(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Class probabilities ``softmax(logits / temperature)``."""
    return (logits.float() / temperature).softmax(dim=-1)


@dataclass
class Reliability:
    """Top-1 confidence binned into ``ECE_BINS`` equal-width bins: per bin the image count, mean confidence
    and accuracy (0 where a bin is empty); ``ece`` their count-weighted mean gap."""

    counts: torch.Tensor
    confidence: torch.Tensor
    accuracy: torch.Tensor
    ece: float


def reliability(probabilities: torch.Tensor, targets: torch.Tensor, bins: int = ECE_BINS) -> Reliability:
    """Reliability bins and ECE of ``(N, classes)`` probabilities against class indices ``targets``."""
    probabilities, targets = probabilities.detach().float().cpu(), targets.detach().cpu()
    confidence, predicted = probabilities.max(dim=1)
    correct = (predicted == targets).double()
    index = (confidence.double() * bins).ceil().long().clamp(1, bins) - 1  # bin (k/bins, (k+1)/bins]
    counts = torch.bincount(index, minlength=bins).double()
    conf_sum = torch.zeros(bins, dtype=torch.float64).index_add_(0, index, confidence.double())
    acc_sum = torch.zeros(bins, dtype=torch.float64).index_add_(0, index, correct)
    mean_conf = conf_sum / counts.clamp(min=1)
    accuracy = acc_sum / counts.clamp(min=1)
    ece = float(((accuracy - mean_conf).abs() * counts).sum() / max(len(targets), 1))
    return Reliability(counts.long(), mean_conf, accuracy, ece)


def expected_calibration_error(probabilities: torch.Tensor, targets: torch.Tensor, bins: int = ECE_BINS) -> float:
    """Top-1 ECE over ``bins`` equal-width confidence bins (see the module docstring)."""
    return reliability(probabilities, targets, bins).ece


def nll(probabilities: torch.Tensor, targets: torch.Tensor) -> float:
    """Mean negative log-likelihood of the true classes."""
    p = probabilities.detach().double().cpu().gather(1, targets.detach().long().cpu()[:, None])
    return float(-p.clamp(min=1e-300).log().mean()) if len(targets) else 0.0


def calibration_report(logits: torch.Tensor, targets: torch.Tensor, temperature: float) -> dict[str, Any]:
    """ECE and NLL of a split before (``T = 1``) and after dividing its logits by ``temperature``."""
    raw, scaled = calibrated(logits, 1.0), calibrated(logits, temperature)
    return {
        "temperature": temperature,
        "bins": ECE_BINS,
        "ece": expected_calibration_error(raw, targets),
        "ece_calibrated": expected_calibration_error(scaled, targets),
        "nll": nll(raw, targets),
        "nll_calibrated": nll(scaled, targets),
    }


class TemperatureScaled(torch.nn.Module):
    """``model(x) / temperature``: the calibrated logits, as exported graphs output them."""

    def __init__(self, model: torch.nn.Module, temperature: float) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("temperature", torch.tensor(float(temperature)), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x) / self.temperature
