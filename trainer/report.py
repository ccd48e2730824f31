"""What a training run leaves behind besides the model: metrics as JSON lines, learning curves
and a confusion matrix as PNG, and the evaluation tables printed to the terminal."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np


# Up to this many classes the metrics hold the confusion matrix whole; beyond, its cells that count a row: a
# classifier of 12,000 classes (a column of ids taken as the target) wrote 144 million zeros, 433 MB, into
# metrics.jsonl, and scoring one of 10,000 classes built the 800 MB matrix first, outside the memory check.
DENSE_CONFUSION_CLASSES = 100
# Up to this many classes the per-class table lists each; beyond, the TABLE_ENDS of lowest f1 and the TABLE_ENDS
# of highest: 10,000 rows scroll the accuracy off any terminal.
TABLE_CLASSES, TABLE_ENDS = 40, 20


def write_metrics(path: Path, history: list[dict], final: dict) -> None:
    """One JSON object per epoch, then one with ``"event": "final"`` holding the test metrics, the confusion
    as ``classification_metrics`` gives it (a matrix, or ``confusion_cells``)."""
    with open(path, "w", encoding="utf-8") as f:
        for row in history:
            f.write(_epoch_line(row))
        written = {key: value.tolist() if isinstance(value, np.ndarray) else value for key, value in final.items()}
        f.write(json.dumps({"event": "final", **written}) + "\n")


def append_epoch(path: Path, row: dict) -> None:
    """Add an epoch's line, as ``write_metrics`` writes it, to ``path`` as the epoch ends. The file is
    closed each time, which hands the line to the system: a run stopped or killed later keeps it."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(_epoch_line(row))


def _epoch_line(row: dict) -> str:
    return json.dumps({"event": "epoch", **row}) + "\n"


def epochs_written(path: Path) -> list[dict]:
    """The epochs' rows ``append_epoch`` has written to ``path``, as they were given to it."""
    with open(path, encoding="utf-8") as f:
        lines = [json.loads(line) for line in f]
    return [{key: value for key, value in line.items() if key != "event"} for line in lines if line["event"] == "epoch"]


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, classes: int) -> np.ndarray:
    """Counts of shape (classes, classes): row = true class, column = predicted class."""
    return np.bincount(y_true * classes + y_pred, minlength=classes * classes).reshape(classes, classes)


def confusion_cells(y_true: np.ndarray, y_pred: np.ndarray, classes: int) -> np.ndarray:
    """The cells of the confusion matrix that count a row, (cells, 3): [true, predicted, count] each, in the
    order of the matrix's rows. Its memory follows the rows scored, not the classes squared."""
    pairs, counts = np.unique(y_true.astype(np.int64) * classes + y_pred, return_counts=True)
    return np.stack([pairs // classes, pairs % classes, counts], axis=1)


def cells_of(metrics: dict) -> np.ndarray:
    """The cells that count a row, as ``confusion_cells`` gives them, of a classifier's ``metrics`` (either form)."""
    if "confusion_cells" in metrics:
        return np.asarray(metrics["confusion_cells"], dtype=np.int64).reshape(-1, 3)
    cm = np.asarray(metrics["confusion"], dtype=np.int64)
    true, predicted = np.nonzero(cm)
    return np.stack([true, predicted, cm[true, predicted]], axis=1)


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, labels: list[str]) -> dict:
    """Accuracy, each class's precision, recall, f1 and support, and the confusion: up to
    DENSE_CONFUSION_CLASSES classes the matrix (``confusion``), beyond that the cells that count a row
    (``confusion_cells``, see ``confusion_cells``): a matrix of 10,000 classes takes 800 MB."""
    classes = len(labels)
    support = np.bincount(y_true, minlength=classes)
    predicted = np.bincount(y_pred, minlength=classes)
    tp = np.bincount(y_true[y_true == y_pred], minlength=classes).astype(np.float64)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    f1 = np.divide(2 * precision * recall, precision + recall,
                   out=np.zeros_like(tp), where=(precision + recall) > 0)
    return {
        "accuracy": float(tp.sum() / max(len(y_true), 1)),
        "n": int(len(y_true)),
        "per_class": [{"label": label, "precision": round(float(p), 4), "recall": round(float(r), 4),
                       "f1": round(float(f), 4), "support": int(s)}
                      for label, p, r, f, s in zip(labels, precision, recall, f1, support)],
        **({"confusion": confusion_matrix(y_true, y_pred, classes)} if classes <= DENSE_CONFUSION_CLASSES
           else {"confusion_cells": confusion_cells(y_true, y_pred, classes)}),
    }


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray, training_mean: float | None = None) -> dict:
    """RMSE and MAE, beside the RMSE of the baseline that always predicts the training targets'
    mean. Without ``training_mean`` the baseline predicts the scored targets' own mean: their
    standard deviation, which flatters the baseline, and says so in ``mean_predictor``."""
    y = y_true.astype(np.float64)
    err = y_pred.astype(np.float64) - y
    mean = float(y.mean()) if training_mean is None else float(training_mean)
    return {"rmse": float(np.sqrt(np.mean(err ** 2))), "mae": float(np.mean(np.abs(err))),
            "rmse_of_mean_predictor": float(np.sqrt(np.mean((y - mean) ** 2))),
            "mean_predictor": "scored targets" if training_mean is None else "training targets",
            "n": int(len(y_true))}


def format_metrics(metrics: dict, full_table: Path | None = None) -> str:
    """The table ``evaluate`` and ``train`` print. Of more than TABLE_CLASSES classes it lists the TABLE_ENDS of
    lowest f1 (of those, the most rows first) and the TABLE_ENDS of highest, and says how many it leaves out, and
    that every class's row is in ``full_table`` (a metrics.jsonl) when one was written."""
    if "accuracy" not in metrics:
        return (f"RMSE {figure(metrics['rmse'])}   MAE {figure(metrics['mae'])}   "
                f"(predicting {_mean_of(metrics)}: RMSE {figure(metrics['rmse_of_mean_predictor'])})   "
                f"n={metrics['n']}")
    lines = [f"accuracy {metrics['accuracy'] * 100:.2f}%  (n={metrics['n']})", "",
             f"{'class':<14}{'precision':>10}{'recall':>10}{'f1':>10}{'support':>10}"]
    rows = metrics["per_class"]
    if len(rows) <= TABLE_CLASSES:
        return "\n".join(lines + [_table_row(row) for row in rows])
    by_f1 = sorted(rows, key=lambda row: (row["f1"], -row["support"]))
    lowest = by_f1[:TABLE_ENDS]
    highest = sorted(by_f1[TABLE_ENDS:], key=lambda row: (-row["f1"], -row["support"]))[:TABLE_ENDS]
    where = f"; every class's row: per_class in the last line of {full_table}" if full_table else ""
    return "\n".join(lines + [f"the {TABLE_ENDS} of lowest f1:"] + [_table_row(row) for row in lowest]
                      + [f"the {TABLE_ENDS} of highest f1:"] + [_table_row(row) for row in highest]
                      + [f"({len(rows) - 2 * TABLE_ENDS:,} of the {len(rows):,} classes left out{where})"])


def _table_row(row: dict) -> str:
    return f"{row['label']:<14}{row['precision']:>10.4f}{row['recall']:>10.4f}{row['f1']:>10.4f}{row['support']:>10}"


def learned_nothing(metrics: dict) -> str | None:
    """A note when the model gives one constant answer for every input (a class for 99 % of the test
    rows or more; no better than the training mean), which is what a network that learned nothing
    gives: a run that ends that way still saves its model, and the figures alone do not say it."""
    if "accuracy" in metrics:
        # One class answered for (nearly) every input: the confusion matrix's columns are its answers.
        cells = cells_of(metrics)
        answered = np.bincount(cells[:, 1], weights=cells[:, 2])
        if answered.max() < 0.99 * answered.sum():
            return None
        score = f"it answers one class for {answered.max() / answered.sum():.0%} of the test rows"
    else:
        if metrics["rmse"] < metrics["rmse_of_mean_predictor"]:
            return None
        score = f"RMSE {figure(metrics['rmse'])} is no better than predicting {_mean_of(metrics)}"
    return (f"note: {score}: the network learned nothing useful. Read the loss of each epoch above (flat: the learning "
            "rate is too low, or the units are dead or identical; rising: it is too high), and try these settings "
            "with `python -m trainer overfit`")


def figure(value: float) -> str:
    """A loss or metric as a line shows it: four decimals, or four significant digits where those would show
    few digits or none (an error in a target's small units, 0.0002, read 0.0000) or far too many (a diverging loss
    read 9439460815807322704052224.0000)."""
    decimals = f"{value:.4f}"  # judged as shown: 0.0099999 is 0.0100, as 0.01 is, not 0.01
    return decimals if value == 0 or 0.01 <= abs(float(decimals)) < 1e5 else f"{value:.4g}"


def _mean_of(metrics: dict) -> str:
    # Manifests written before the baseline named its mean hold the scored targets' mean.
    return "the training mean" if metrics.get("mean_predictor") == "training targets" else "their own mean"


def require_plotting() -> None:
    """Raise ImportError with the fix when matplotlib, which the plots need, is not installed:
    a run checks this before training, not when it writes the plots at the end."""
    if importlib.util.find_spec("matplotlib") is None:
        raise ImportError("the trainer writes its plots with matplotlib, which is not installed: install "
                          "the trainer's extra (pip install -e '.[trainer]', which `make venv` does)",
                          name="matplotlib")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_learning_curves(path: Path, history: list[dict], title: str, kept_epoch: int | None = None) -> None:
    """Train and validation loss (and accuracy, for classifiers) per epoch. ``kept_epoch``: the earlier
    epoch whose weights early stopping restored, marked on each panel, since the curves run on past
    the model's own figures."""
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator
    epochs = [row["epoch"] for row in history]
    has_accuracy = "train_accuracy" in history[0]
    fig, axes = plt.subplots(1, 2 if has_accuracy else 1, figsize=(10 if has_accuracy else 5.5, 4), squeeze=False)
    panels = [("loss", axes[0][0])] + ([("accuracy", axes[0][1])] if has_accuracy else [])
    for metric, ax in panels:
        for split in ("train", "val"):
            values = [row.get(f"{split}_{metric}") for row in history]
            if any(v is not None for v in values):
                ax.plot(epochs, values, marker="o", markersize=3, label="validation" if split == "val" else split)
        if kept_epoch is not None:
            ax.axvline(kept_epoch, color="0.4", linestyle="--", linewidth=1, label=f"kept: epoch {kept_epoch}")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # no epoch 1.5 on a short run
        ax.set_ylabel(metric if has_accuracy or metric != "loss" else "loss (MSE of the standardised target)")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


MAX_ANNOTATED_CLASSES = 30  # beyond this a count per cell is unreadable, and a text object per cell is slow
MAX_LABELLED_CLASSES = 50  # beyond this the class names overlap: the axes number the classes instead
# Beyond this many classes a side the plot, some 500 pixels wide, shows blocks of classes, each the sum of its cells:
# matplotlib colours every cell in float64 RGBA first, 10 GB and 16 s for 12,000 classes.
MAX_PLOTTED_CELLS = 500


def plot_confusion(path: Path, metrics: dict, labels: list[str], title: str) -> None:
    """The confusion matrix of a classifier's ``metrics`` (either form) as a heat map; with few classes each
    cell also shows its count, with very many each cell is a block of classes (MAX_PLOTTED_CELLS)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 6))
    block = -(-len(labels) // MAX_PLOTTED_CELLS)  # classes a side of a cell: 1 up to MAX_PLOTTED_CELLS classes
    cells = cells_of(metrics)  # each cell's count added to its block's, never making the whole matrix
    cm = np.zeros((-(-len(labels) // block),) * 2, dtype=np.int64)
    np.add.at(cm, (cells[:, 0] // block, cells[:, 1] // block), cells[:, 2])
    image = ax.imshow(cm, cmap="Blues", interpolation="nearest",
                      extent=(-0.5, len(labels) - 0.5, len(labels) - 0.5, -0.5))
    named = len(labels) <= MAX_LABELLED_CLASSES
    if named:
        upright = len(labels) <= 20 and all(len(str(label)) <= 2 for label in labels)  # digits read best upright
        ax.set_xticks(range(len(labels)), labels, rotation=0 if upright else 45, ha="center" if upright else "right")
        ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted" if named else "predicted (class index)")
    ax.set_ylabel("true" if named else "true (class index)")
    if len(labels) <= MAX_ANNOTATED_CLASSES:
        threshold = cm.max() / 2
        for i in range(cm.shape[0]):
            for j in range(cm.shape[1]):
                ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if cm[i, j] > threshold else "black")
    fig.colorbar(image, ax=ax, label="examples" if block == 1 else f"examples per block of {block} x {block} classes")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
