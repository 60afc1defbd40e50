"""Training artefacts a person looks at: history CSV, learning curves, confusion matrix, and the
test samples the model got wrong."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np


def write_history_csv(history: list[dict[str, float]], path: Path) -> None:
    if not history:
        path.write_text("epoch\n")
        return
    fields = ["epoch"] + [k for k in history[0] if k != "epoch"]
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        for row in history:
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})


def plot_curves(history: list[dict[str, float]], path: Path, title: str, best_epoch: int | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    epochs = [row["epoch"] for row in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    for key, ax, label in (
        ("loss", ax_loss, "train"), ("val_loss", ax_loss, "validation"),
        ("accuracy", ax_acc, "train"), ("val_accuracy", ax_acc, "validation"),
    ):
        if history and key in history[0]:
            ax.plot(epochs, [row[key] for row in history], marker="o", label=label)
    ax_loss.set(title="loss", xlabel="epoch")
    ax_acc.set(title="accuracy", xlabel="epoch")
    for ax in (ax_loss, ax_acc):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
        if best_epoch is not None:
            ax.axvline(best_epoch, color="tab:green", linestyle="--", alpha=0.8, label=f"best epoch ({best_epoch})")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_confusion(cm: np.ndarray, class_names: list[str], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = np.asarray(cm)
    n = len(class_names)
    size = max(4.0, 0.6 * n + 2)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    row_sums = cm.sum(axis=1, keepdims=True)
    norm = np.divide(cm, row_sums, out=np.zeros(cm.shape, dtype=float), where=row_sums > 0)
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), class_names, rotation=45, ha="right")
    ax.set_yticks(range(n), class_names)
    ax.set(xlabel="predicted", ylabel="true", title=title)
    for i in range(n):
        for j in range(n):
            ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=8,
                    color="white" if norm[i, j] > 0.5 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046, label="fraction of true class")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_mistakes(x: np.ndarray, y_true: np.ndarray, probs: np.ndarray, class_names: list[str], path: Path, title: str,
                  limit: int = 25) -> int:
    """A grid of the test samples the model got most confidently wrong (pictures, or curves for
    1-D signals), each captioned true -> predicted (probability). Returns how many were wrong."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pred = probs.argmax(axis=1)
    wrong = np.flatnonzero(pred != y_true)
    order = wrong[np.argsort(-probs[wrong, pred[wrong]])][:limit]
    cols = max(1, min(5, len(order)))
    rows = max(1, -(-len(order) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(2.2 * cols, 2.4 * rows + 0.4), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, i in zip(axes.flat, order):
        sample = np.asarray(x[i])
        if sample.ndim == 3 and sample.shape[-1] in (1, 3):
            img = sample[..., 0] if sample.shape[-1] == 1 else sample
            ax.imshow(img.astype(np.uint8) if img.dtype != np.uint8 and img.max() > 1 else img, cmap="gray" if img.ndim == 2 else None)
        else:
            ax.axis("on")
            ax.plot(sample.reshape(len(sample), -1)[:, 0], linewidth=0.6)
            ax.set_xticks([])
            ax.set_yticks([])
        ax.set_title(f"{class_names[y_true[i]]} -> {class_names[pred[i]]}\n({probs[i, pred[i]]:.2f})", fontsize=8,
                     color="tab:red")
    if not len(order):
        axes.flat[0].text(0.5, 0.5, "no test sample was misclassified", ha="center", va="center")
    fig.suptitle(f"{title}: {len(wrong)} of {len(y_true)} test samples wrong"
                 + (f", {len(order)} most confident shown" if len(wrong) > len(order) else ""), fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return int(len(wrong))
