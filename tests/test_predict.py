"""Classification from every kind of source, batched, with per-file errors."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from underjax import run_under_jax

from jupyter_cifar.engine.data import CLASS_NAMES
from jupyter_cifar.engine.nets import build_model, init_from_data
from jupyter_cifar.engine.predict import COMPILED_FROM, classify, evaluate, predict_proba
from jupyter_cifar.errors import BadParameter


@pytest.fixture(scope="module")
def models():
    import keras

    keras.utils.set_random_seed(0)
    return {"tutorial": build_model("tutorial"), "fast": build_model("fast")}


@pytest.fixture
def cat_jpeg(cifar10_dir: Path) -> Path:
    return cifar10_dir / "test" / "cat" / "0000.jpg"


def test_every_kind_of_source_gives_the_same_answer(models, cat_jpeg: Path) -> None:
    raw = cat_jpeg.read_bytes()
    pil = Image.open(cat_jpeg)
    sources = [cat_jpeg, str(cat_jpeg), raw, memoryview(raw), np.asarray(pil), pil, io.BytesIO(raw)]
    results = classify(models["fast"], sources, top=3)
    assert [r.ok for r in results] == [True] * len(sources)
    first = results[0].top
    assert len(first) == 3 and {t["label"] for t in first} <= set(CLASS_NAMES)
    for r in results[1:]:
        assert [t["label"] for t in r.top] == [t["label"] for t in first]
        for a, b in zip(r.top, first, strict=True):
            assert a["probability"] == pytest.approx(b["probability"], abs=1e-5)
    assert results[0].file == str(cat_jpeg)


@pytest.mark.parametrize("preset", ["tutorial", "fast"])
def test_probabilities_whether_the_model_gives_logits_or_softmax(models, cifar10, preset) -> None:
    probs = predict_proba(models[preset], cifar10.x_test[:300])
    assert probs.shape == (300, 10)
    assert np.all(probs >= 0) and np.allclose(probs.sum(axis=1), 1.0, atol=1e-4)
    result = classify(models[preset], [cifar10.x_test[0]], top=10)[0]
    values = [t["probability"] for t in result.top]
    assert values == sorted(values, reverse=True) and sum(values) == pytest.approx(1.0, abs=1e-4)


def test_batching_does_not_change_results(models, cifar10) -> None:
    x = cifar10.x_test[:600]
    whole = predict_proba(models["fast"], x, batch_size=600)
    chunked = predict_proba(models["fast"], x, batch_size=64)
    np.testing.assert_allclose(whole, chunked, atol=1e-5)


def test_one_bad_file_does_not_stop_the_others(models, cat_jpeg: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(cat_jpeg.read_bytes()[:200])
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    results = classify(models["fast"], [cat_jpeg, broken, text, cat_jpeg], top=2)
    assert [r.ok for r in results] == [True, False, False, True]
    assert "broken.jpg" in results[1].error and results[1].top == []
    assert "notes.txt" in results[2].error
    assert results[0].top == results[3].top
    assert results[1].to_json() == {
        "file": str(broken),
        "ok": False,
        "top": [],
        "error": results[1].error,
    }


def test_uploads_are_named_by_their_names(models, cat_jpeg: Path) -> None:
    results = classify(models["fast"], [cat_jpeg.read_bytes(), b"junk"], names=["a.jpg", "b.png"])
    assert [r.file for r in results] == ["a.jpg", "b.png"]
    assert results[1].error.startswith("b.png")


def test_top_is_checked_and_capped(models, cat_jpeg: Path) -> None:
    with pytest.raises(BadParameter, match="--top"):
        classify(models["fast"], [cat_jpeg], top=0)
    assert len(classify(models["fast"], [cat_jpeg], top=50)[0].top) == 10


def test_nothing_to_classify_is_fine(models) -> None:
    assert classify(models["fast"], []) == []


def test_evaluate_counts_per_class(models, cifar10) -> None:
    data = cifar10.subset(None, 500)
    ev = evaluate(models["fast"], data.x_test, data.y_test, data.class_names)
    assert ev.n == 500 and np.array(ev.confusion).sum() == 500
    assert np.array(ev.confusion).sum(axis=1).tolist() == [50] * 10  # class-balanced subset
    assert 0 <= ev.accuracy <= 1 and set(ev.per_class) == set(CLASS_NAMES)


@pytest.mark.parametrize("precision", ["float32", "mixed_bfloat16"])
def test_a_large_set_goes_through_the_compiled_predict_function_with_the_same_answers(
    cifar10, precision: str
) -> None:
    """Under TensorFlow, COMPILED_FROM images or more go through Keras' compiled predict function (1.3-2.9x
    faster: benchmarks/evaluation_speed.py); a handful is called eagerly until the model has been traced,
    and then compiled too. Both ways give the same answers (in bfloat16, up to its rounding)."""
    import keras

    keras.utils.set_random_seed(0)
    model = build_model("fast", precision=precision)
    init_from_data(model, cifar10.x_train)
    head = model.get_layer("classify")  # confident answers, as a trained model gives (not ~0.1 each)
    head.set_weights([w * 30 for w in head.get_weights()])
    x = cifar10.x_test[:COMPILED_FROM]
    few = predict_proba(model, x[:200])
    assert model.predict_function is None  # a handful: called eagerly, nothing traced
    many = predict_proba(model, x)
    assert model.predict_function is not None
    again = predict_proba(model, x[:200])  # the model is traced now: compiled, whatever the size
    assert few.max(axis=1).mean() > 0.5 and len(set(few.argmax(axis=1))) > 1
    for compiled in (many[:200], again):
        if precision == "float32":
            np.testing.assert_allclose(compiled, few, atol=1e-5)
        else:
            assert np.abs(compiled - few).mean() < 0.01
        assert (compiled.argmax(axis=1) == few.argmax(axis=1)).mean() >= 0.97


# The same under Keras' JAX backend, in a process of its own (Keras reads KERAS_BACKEND once, at import).
UNDER_JAX = """
import json, sys
import keras
import numpy as np
from jupyter_cifar.engine.data import load_cifar10
from jupyter_cifar.engine.nets import build_model, init_from_data
from jupyter_cifar.engine.predict import COMPILED_FROM, predict_proba
keras.utils.set_random_seed(0)
data = load_cifar10(sys.argv[1])  # from the test session's cache
x = data.x_test[: COMPILED_FROM + 40]
model = build_model("fast", precision="float32")
init_from_data(model, data.x_train)
head = model.get_layer("classify")
head.set_weights([w * 30 for w in head.get_weights()])
few = predict_proba(model, x[:200])
traced_few = model.predict_function is not None
many = predict_proba(model, x)
print(json.dumps({"backend": keras.backend.backend(), "traced_few": traced_few,
                  "traced": model.predict_function is not None, "spread": float(few.std(axis=0).max()),
                  "differ": float(np.abs(many[:200] - few).max())}))
"""


def test_under_jax_a_large_set_is_compiled_too(cifar10_dir: Path, cifar10) -> None:
    """JAX's compiled predict function ran 1,024 test images or more 1.1-2.9x faster than the eager calls on
    the CPU (benchmarks/evaluation_speed.py under KERAS_BACKEND=jax), its last chunk's size compiled once
    more; the answers are the same."""
    seen, _ = run_under_jax(UNDER_JAX, str(cifar10_dir))
    assert seen["backend"] == "jax" and not seen["traced_few"] and seen["traced"]
    assert seen["spread"] > 1e-3 and seen["differ"] < 1e-5  # answers that depend on the image, the same
