"""Zoo models from skl2onnx, the converter scikit-learn users export with: its default tensor names (X,
variable, label, probabilities), the ai.onnx.ml operators (TreeEnsemble, LinearClassifier, Scaler,
OneHotEncoder) and rank-1 label outputs. Classifiers are converted with `zipmap: False`: skl2onnx's
default ZipMap output is a sequence of maps, which Triton cannot serve (refused at upload, see
tests/registry/test_bring_your_model.py)."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from tests.support.zoo import Zoo

REGRESSOR = "skl2onnx (scikit-learn regressor)"
CLASSIFIER = "skl2onnx (scikit-learn classifier, zipmap off)"
CLUSTERING = "skl2onnx (scikit-learn clustering)"
STRINGS = "skl2onnx (string features)"


def iris() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled iris data as FP32 (what skl2onnx types the input as)."""
    from sklearn.datasets import load_iris

    features, target = load_iris(return_X_y=True)
    return features.astype(np.float32), target


def diabetes() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_diabetes

    features, target = load_diabetes(return_X_y=True)
    return features.astype(np.float32), target


def logistic_classifier(path: Path, *, zipmap: bool = True) -> Path:
    """A logistic regression on iris converted by skl2onnx. With its defaults (`zipmap`): outputs
    `output_label` and the ZipMap `output_probability` (a sequence of maps from class to probability);
    with zipmap off: `label` INT64 [N] and `probabilities` FP32 [N, 3]."""
    from skl2onnx import to_onnx
    from sklearn.linear_model import LogisticRegression

    features, target = iris()
    options = None if zipmap else {"zipmap": False}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = to_onnx(LogisticRegression(max_iter=500).fit(features, target), features[:1], options=options)
    path.write_bytes(model.SerializeToString())
    return path


def _estimators() -> dict[str, tuple[Callable[[], Any], Callable[[], tuple[np.ndarray, np.ndarray]], str]]:
    from sklearn.cluster import KMeans
    from sklearn.ensemble import (
        GradientBoostingRegressor,
        HistGradientBoostingClassifier,
        RandomForestClassifier,
    )
    from sklearn.linear_model import LinearRegression, LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    return {
        "linear-regression": (LinearRegression, diabetes, REGRESSOR),
        "gradient-boosting": (
            lambda: GradientBoostingRegressor(n_estimators=8, random_state=0),
            diabetes,
            REGRESSOR,
        ),
        "logistic": (lambda: LogisticRegression(max_iter=500), iris, CLASSIFIER),
        "random-forest": (
            lambda: RandomForestClassifier(n_estimators=6, max_depth=4, random_state=0),
            iris,
            CLASSIFIER,
        ),
        "hist-boosting": (
            lambda: HistGradientBoostingClassifier(max_iter=6, random_state=0),
            iris,
            CLASSIFIER,
        ),
        "scaled-svc": (lambda: make_pipeline(StandardScaler(), SVC()), iris, CLASSIFIER),
        "kmeans": (lambda: KMeans(n_clusters=3, n_init=2, random_state=0), iris, CLUSTERING),
    }


def add_sklearn_exports(zoo: Zoo) -> None:
    """skl2onnx.to_onnx on fitted estimators, with the rows of their own data as the request."""
    for case, (factory, data, family) in _estimators().items():
        name = f"sklearn-{case}"

        def build(name: str = name, factory=factory, data=data, family: str = family) -> None:
            from skl2onnx import to_onnx

            features, target = data()
            estimator = factory().fit(features, target)
            options = {"zipmap": False} if family == CLASSIFIER else None
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model = to_onnx(estimator, features[:1], options=options)
            path = zoo.path(name, ".onnx")
            path.write_bytes(model.SerializeToString())
            zoo.onnx(name, family, path, {"X": features[::37][:4]}, rtol=1e-4, atol=1e-5)

        zoo.attempt(name, build)
    zoo.attempt("sklearn-one-hot", lambda: _one_hot(zoo))


def _one_hot(zoo: Zoo) -> None:
    """A pipeline over string columns: a BYTES input of shape [-1, 2]."""
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import StringTensorType
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    rows = np.array([["red", "s"], ["blue", "m"], ["red", "l"], ["green", "m"], ["blue", "s"]], dtype=object)
    estimator = make_pipeline(OneHotEncoder(), LogisticRegression()).fit(rows, [0, 1, 1, 0, 1])
    model = convert_sklearn(
        estimator,
        initial_types=[("features", StringTensorType([None, 2]))],
        options={id(estimator): {"zipmap": False}},
    )
    path = zoo.path("sklearn-one-hot", ".onnx")
    path.write_bytes(model.SerializeToString())
    request = np.array([[c.encode() for c in row] for row in rows[:3]], dtype=object)  # BYTES as bytes
    zoo.onnx("sklearn-one-hot", STRINGS, path, {"features": request}, rtol=1e-4, atol=1e-5)
