"""Reference models for the wine-quality baseline, on exactly the split the trainer uses.

    python bench/wine_anchors.py [--data-dir DIR] [--seed 0]

Prints test RMSE and MAE of predicting the training mean, least squares, a random forest and an
RBF support-vector regressor (scikit-learn, a benchmark-only dependency) beside the committed
model, so its number has context.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from shared.errors import ScratchnetError  # noqa: E402
from shared.model_file import load_model  # noqa: E402
from trainer.datasets import load_dataset  # noqa: E402


def errors(predicted: np.ndarray, actual: np.ndarray) -> tuple[float, float]:
    diff = predicted - actual
    return float(np.sqrt(np.mean(diff ** 2))), float(np.mean(np.abs(diff)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", help="local dataset folder (default: download into the cache)")
    parser.add_argument("--seed", type=int, default=0, help="the split seed the baseline was trained with")
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "wine-quality" / "1" / "model.npz",
                        help="the model file to set beside them (default: the committed models/wine-quality v1)")
    args = parser.parse_args()

    try:
        model = load_model(args.model)
    except ScratchnetError as e:
        raise SystemExit(f"bench/wine_anchors.py: {e}") from None
    try:
        from sklearn.ensemble import RandomForestRegressor
        from sklearn.preprocessing import StandardScaler
        from sklearn.svm import SVR
    except ImportError:
        raise SystemExit("bench/wine_anchors.py needs scikit-learn, from the bench extra: "
                         "pip install -e '.[bench]'") from None
    data = load_dataset("wine-quality", data_dir=args.data_dir, variant="red", seed=args.seed)
    scaler = StandardScaler().fit(data.x_train)
    x_train, x_test = scaler.transform(data.x_train), scaler.transform(data.x_test)
    design = np.c_[x_train, np.ones(len(x_train))]
    weights = np.linalg.lstsq(design, data.y_train, rcond=None)[0]
    rows = {
        "predict the training mean": np.full(len(x_test), data.y_train.mean()),
        "least squares": np.c_[x_test, np.ones(len(x_test))] @ weights,
        "random forest (300 trees)": RandomForestRegressor(300, random_state=0).fit(x_train, data.y_train).predict(x_test),
        "SVR (RBF, C=1)": SVR().fit(x_train, data.y_train).predict(x_test),
    }
    rows[f"scratchnet {model.name} v{model.version}"] = model.predict(data.x_test)
    print(f"{data.split}: {len(data.x_train)} train / {len(data.x_test)} test rows\n")
    print(f"{'model':<32}{'RMSE':>8}{'MAE':>8}")
    for name, predicted in rows.items():
        rmse, mae = errors(predicted, data.y_test)
        print(f"{name:<32}{rmse:>8.4f}{mae:>8.4f}")


if __name__ == "__main__":
    main()
