"""PNG figures of the evaluation: confusion matrices and one-vs-rest ROC curves (matplotlib, no display)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
import numpy as np  # noqa: E402

FIGURE_DPI = 110
CONFUSION_SIZE_INCHES = (10.0, 4.4)
ROC_SIZE_INCHES = (5.2, 5.0)
DARK_CELL_FRACTION = 0.5
"""Cells darker than this fraction of the colour scale get white text."""


def _annotate(ax, values: np.ndarray, text: list[list[str]], vmax: float) -> None:
    for i in range(values.shape[0]):
        for j in range(values.shape[1]):
            dark = vmax > 0 and values[i, j] > DARK_CELL_FRACTION * vmax
            ax.text(j, i, text[i][j], ha="center", va="center", color="white" if dark else "black")


def _matrix_panel(ax, values: np.ndarray, text: list[list[str]], labels: Sequence[str], title: str,
                  vmax: float) -> None:
    ax.imshow(values, cmap="Blues", vmin=0, vmax=vmax if vmax > 0 else 1)
    ax.set_xticks(range(len(labels)), labels)
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    _annotate(ax, values, text, vmax)


def plot_confusion_matrix(cm: np.ndarray, labels: Sequence[str], title: str, path: Path) -> Path:
    """Counts beside the row-normalised matrix (recall on the diagonal)."""
    cm = np.asarray(cm, dtype=np.float64)
    rows = cm.sum(axis=1, keepdims=True)
    normalised = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    fig, (left, right) = plt.subplots(1, 2, figsize=CONFUSION_SIZE_INCHES)
    try:
        _matrix_panel(left, cm, [[f"{int(v)}" for v in row] for row in cm], labels, "counts", float(cm.max()))
        _matrix_panel(right, normalised, [[f"{v:.2f}" for v in row] for row in normalised], labels,
                      "row-normalised", 1.0)
        fig.suptitle(title)
        fig.tight_layout()
        fig.savefig(path, dpi=FIGURE_DPI)
    finally:
        plt.close(fig)
    return path


def plot_roc(curves: dict[str, dict], title: str, path: Path) -> Path:
    """One one-vs-rest curve per label, AUC in the legend; the chance diagonal for reference."""
    fig, ax = plt.subplots(figsize=ROC_SIZE_INCHES)
    try:
        for label, curve in curves.items():
            auc = curve.get("auc")
            legend = f"{label} (AUC {auc:.3f})" if auc is not None else f"{label} (AUC n/a)"
            ax.plot(curve["fpr"], curve["tpr"], label=legend, drawstyle="default")
        ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=0.8, label="chance")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("false positive rate")
        ax.set_ylabel("true positive rate")
        ax.set_title(title)
        ax.legend(loc="lower right")
        fig.tight_layout()
        fig.savefig(path, dpi=FIGURE_DPI)
    finally:
        plt.close(fig)
    return path
