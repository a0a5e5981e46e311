"""Classification and evaluation: top-k labels for images, accuracy and confusion for a test set.

Images go through the model in fixed-size chunks. Under TensorFlow and JAX a set of :data:`COMPILED_FROM`
images or more (an evaluation, a validation pass) goes through Keras' compiled predict function
(``predict_on_batch``, traced once per model and cached on it), which ran a test set 1.3-2.9x faster than
calling the model eagerly under TensorFlow, 1.1-2.9x under JAX on the CPU (``benchmarks/evaluation_speed.py``;
under JAX the last chunk's size is compiled once more); a handful of uploads is called eagerly,
where a trace would cost more than it saves, unless the model has been traced already. Never through
``model.predict``, whose per-call set-up costs more than classifying a handful of uploads.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import BadParameter, ImageError
from .data import CLASS_NAMES
from .images import ImageSource, describe, load_images
from .views import DEFAULT_PLAN, VIEWS, ViewPlan, decode_photos, photo_probabilities

if TYPE_CHECKING:
    import keras

BATCH = 256
# From this many images, tracing the model's predict function about pays for itself within the call: its
# first call traces twice (a full chunk, then the last one's size), 0.3-0.5 s for a preset's network and
# 2.4-2.6 s with test-time views built in, and each chunk of 256 then saved 0.03-0.05 s and 0.35-0.55 s
# (benchmarks/evaluation_speed.py on a 2-core Xeon with AMX, mixed bfloat16). Later calls pay nothing.
COMPILED_FROM = 4 * BATCH


def predict_proba(model: keras.Model, x: np.ndarray, batch_size: int = BATCH) -> np.ndarray:
    """Class probabilities (n, classes) for uint8 images (n, 32, 32, 3); logits are soft-maxed. A model
    taking another size (an imported 96x96 or 224x224 one) gets the images resized to it."""
    import keras

    from .nets import outputs_probabilities

    if len(x) == 0:
        return np.zeros((0, model.output_shape[-1]), np.float32)
    size = _input_size(model)
    call = _compiled if _compile_pays(model, len(x)) else _eager
    chunks = []
    for start in range(0, len(x), batch_size):
        batch = keras.ops.convert_to_tensor(x[start : start + batch_size], dtype="float32")
        if size is not None and tuple(batch.shape[1:3]) != size:
            batch = keras.ops.image.resize(batch, size, interpolation="bilinear", antialias=True)
        chunks.append(call(model, batch))
    out = np.concatenate(chunks).astype(np.float32)
    if not outputs_probabilities(model):
        out = np.exp(out - out.max(axis=1, keepdims=True))
        out /= out.sum(axis=1, keepdims=True)
    return out


def _compile_pays(model: keras.Model, n: int) -> bool:
    """Whether ``n`` images go through the compiled predict function (see the module's doc). Under torch
    Keras' predict function compiles nothing: the model is called."""
    import keras

    if keras.backend.backend() == "torch":
        return False
    return n >= COMPILED_FROM or getattr(model, "predict_function", None) is not None


def _compiled(model: keras.Model, batch: Any) -> np.ndarray:
    return np.asarray(model.predict_on_batch(batch))


def _eager(model: keras.Model, batch: Any) -> np.ndarray:
    import keras

    return keras.ops.convert_to_numpy(model(batch, training=False))


def _input_size(model: keras.Model) -> tuple[int, int] | None:
    """The height and width a model takes (an imported one may take 96 or 224), None if it takes any."""
    shape = model.input_shape
    shape = shape[0] if isinstance(shape, list) else shape
    size = tuple(shape[1:3])
    return size if len(size) == 2 and None not in size else None


@dataclass
class Classification:
    """What the model thinks of one input, or why that input could not be read."""

    file: str
    ok: bool
    top: list[dict[str, Any]] = field(default_factory=list)  # [{"label", "probability"}, ...]
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"file": self.file, "ok": self.ok, "top": self.top, "error": self.error}


def classify(
    model: keras.Model,
    sources: Iterable[ImageSource],
    *,
    top: int = 3,
    names: Sequence[str] | None = None,
    class_names: Sequence[str] = CLASS_NAMES,
    views: str = "auto",
    plan: ViewPlan | None = None,
) -> list[Classification]:
    """Top-``top`` labels for each source (bytes, paths, arrays, PIL images), in one batched pass.

    A source that cannot be decoded gets ``ok=False`` and its error; the others are still classified.
    ``views`` (see :mod:`jupyter_cifar.engine.views`): "auto" classifies a picture clearly larger than the
    model's input from several views of it (the whole frame and crops), which finds an object that is small
    and off-centre, and a CIFAR-sized one from its one view, as before; "single" always classifies the one
    centre crop (the answers of earlier versions); "multi" always uses several views. ``plan``: which
    views and how they are combined (a stored version's own: :func:`~jupyter_cifar.engine.views.stored_plan`),
    by default :data:`~jupyter_cifar.engine.views.DEFAULT_PLAN`.
    """
    if top < 1:
        raise BadParameter("--top", f"must be at least 1 (got {top})")
    if views not in VIEWS:
        raise BadParameter("views", f"must be one of {', '.join(VIEWS)}, not {views!r}")
    sources = list(sources)
    if names is not None and len(names) != len(sources):
        raise BadParameter("names", "must give one name per source")
    # "single" decodes straight to the centre crop, exactly as before views existed.
    decoded = load_images(sources, names=names) if views == "single" else decode_photos(sources, names=names)
    labels = [describe(s, None if names is None else names[i]) for i, s in enumerate(sources)]
    arrays = {i: d for i, d in enumerate(decoded) if not isinstance(d, ImageError)}
    good = list(arrays)
    probs = photo_probabilities(model, list(arrays.values()), views, plan or DEFAULT_PLAN) if arrays else None
    k = min(top, len(class_names))
    row_of = {i: row for row, i in enumerate(good)}
    results = []
    for i, d in enumerate(decoded):
        if isinstance(d, ImageError):
            results.append(Classification(labels[i], False, error=str(d)))
            continue
        assert probs is not None
        p = probs[row_of[i]]
        order = np.argsort(-p, kind="stable")[:k]
        top_k = [{"label": class_names[j], "probability": round(float(p[j]), 6)} for j in order]
        results.append(Classification(labels[i], True, top=top_k))
    return results


@dataclass
class Evaluation:
    """Accuracy of a model on a labelled set, per class, with its confusion matrix and worst misses."""

    accuracy: float
    n: int
    per_class: dict[str, float]
    confusion: list[list[int]]  # rows: true class, columns: predicted class
    class_names: list[str]
    worst: list[dict[str, Any]]  # the most confidently wrong: {"index", "label", "predicted", ...}

    def to_json(self) -> dict[str, Any]:
        return {
            "accuracy": self.accuracy,
            "n": self.n,
            "per_class": self.per_class,
            "confusion": self.confusion,
            "class_names": self.class_names,
            "worst": self.worst,
        }

    def pictures(self, x: np.ndarray, count: int = 8) -> list[str]:
        """The first ``count`` worst misses as base64 PNGs (32x32, a few hundred bytes each), taken from
        ``x``, the images it was measured on: an event that carries them is drawn anywhere."""
        import base64
        import io

        from PIL import Image

        pictures = []
        for item in self.worst[:count]:
            buffer = io.BytesIO()
            Image.fromarray(np.asarray(x[item["index"]], dtype=np.uint8)).save(buffer, "PNG", optimize=True)
            pictures.append(base64.b64encode(buffer.getvalue()).decode("ascii"))
        return pictures


def evaluate_probabilities(
    probs: np.ndarray, y: np.ndarray, class_names: Sequence[str], worst: int = 16
) -> Evaluation:
    y = np.asarray(y).reshape(-1).astype(np.int64)
    predicted = probs.argmax(axis=1)
    classes = len(class_names)
    confusion = np.zeros((classes, classes), np.int64)
    np.add.at(confusion, (y, predicted), 1)
    support = confusion.sum(axis=1)
    per_class = {
        name: round(float(confusion[c, c] / support[c]), 6) if support[c] else 0.0
        for c, name in enumerate(class_names)
    }
    p_true = probs[np.arange(len(y)), y]
    wrong = np.flatnonzero(predicted != y)
    confidence = probs[wrong, predicted[wrong]]  # the most confidently wrong first: what is shown
    worst_idx = wrong[np.argsort(-confidence, kind="stable")[:worst]]
    return Evaluation(
        accuracy=round(float((predicted == y).mean()), 6) if len(y) else 0.0,
        n=len(y),
        per_class=per_class,
        confusion=confusion.tolist(),
        class_names=list(class_names),
        worst=[
            {
                "index": int(i),
                "label": class_names[y[i]],
                "predicted": class_names[predicted[i]],
                "probability": round(float(probs[i, predicted[i]]), 6),
                "probability_of_label": round(float(p_true[i]), 6),
            }
            for i in worst_idx
        ],
    )


def evaluate(
    model: keras.Model, x: np.ndarray, y: np.ndarray, class_names: Sequence[str] = CLASS_NAMES
) -> Evaluation:
    """Accuracy, per-class accuracy, confusion matrix and worst misses of ``model`` on ``(x, y)``."""
    return evaluate_probabilities(predict_proba(model, x), y, class_names)
