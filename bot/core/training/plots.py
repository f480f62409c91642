"""The loss curve posted after training: people would rather look at it than read numbers."""

from __future__ import annotations

import io
from typing import Any


def loss_curve_png(history: list[dict[str, Any]], title: str = "") -> bytes:
    """Train loss per step and validation loss at each evaluation, as PNG bytes."""
    import matplotlib

    matplotlib.use("Agg")  # no display on a server; must precede pyplot
    from matplotlib.figure import Figure

    train = [(h["step"], h["train_loss"]) for h in history if "train_loss" in h]
    val = [(h["step"], h["val_loss"]) for h in history if "val_loss" in h]
    figure = Figure(figsize=(6, 3.4), dpi=100)
    axes = figure.add_subplot()
    if train:
        axes.plot(*zip(*train, strict=False), label="train loss", color="#1DA1F2", linewidth=1)
    if val:
        axes.plot(*zip(*val, strict=False), label="validation loss", color="#E0245E", marker="o", linewidth=2)
    axes.set_xlabel("step")
    axes.set_ylabel("loss")
    axes.grid(alpha=0.3)
    axes.legend()
    if title:
        axes.set_title(title)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()
