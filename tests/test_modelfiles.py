"""Model files are data: standard .keras out, .keras and legacy .h5 in, never code run on load.

The hostile corpus (one file per published technique) is in test_hostile_models.py; here: round trips,
plain files that are not models, the allow-list of layers with its opt-in, and the sizes worked out from
a config: every model the app and Keras save passes, whatever else a config says is refused cleanly.
"""

from __future__ import annotations

import copy
import json
import zipfile
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
from hostile import BY_NAME as HOSTILE
from hostile import dense, flatten, obj, sequential, write_keras, write_legacy_h5
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jupyter_cifar.engine import layersizes, modelfiles
from jupyter_cifar.engine.modelfiles import (
    APP_LAYERS,
    EXTRA_LAYERS_ENV,
    MODEL_CLASSES,
    check_sizes,
    inspect_model_file,
    load_model,
    save_model,
)
from jupyter_cifar.engine.nets import PRESETS, build_model, compile_for_training
from jupyter_cifar.engine.predict import predict_proba
from jupyter_cifar.engine.tta import with_tta, without_tta
from jupyter_cifar.errors import BadParameter, ModelFileError


@pytest.fixture(scope="module")
def model():
    import keras

    keras.utils.set_random_seed(0)
    return build_model("fast")


@pytest.fixture(scope="module")
def images(cifar10):
    return cifar10.x_test[:64]


def test_keras_round_trip_gives_the_same_predictions(model, images, tmp_path: Path) -> None:
    path = save_model(model, tmp_path / "sub" / "m.keras")
    assert path.exists() and not list(path.parent.glob(".*tmp*"))
    again = load_model(path)
    np.testing.assert_allclose(predict_proba(again, images), predict_proba(model, images), atol=1e-6)


def test_a_saved_file_opens_with_plain_keras(model, images, tmp_path: Path) -> None:
    import keras

    path = save_model(model, tmp_path / "m.keras")
    plain = keras.saving.load_model(path)  # no project code involved, compile config included
    np.testing.assert_allclose(plain.predict(images, verbose=0), predict_proba(model, images), atol=1e-5)


def test_legacy_h5_loads(images, tmp_path: Path) -> None:
    seed_model = build_model("tutorial")  # the seed saved this network as .h5
    path = tmp_path / "seed.h5"
    seed_model.save(path)
    loaded = load_model(path)
    np.testing.assert_allclose(predict_proba(loaded, images), predict_proba(seed_model, images), atol=1e-6)


def test_a_lambda_layer_is_refused_and_never_runs(tmp_path: Path) -> None:
    import keras

    marker = tmp_path / "ran.txt"

    def touch(x):
        marker.write_text("code from the model file ran")
        return x

    inputs = keras.Input((32, 32, 3))
    hostile = keras.Model(inputs, keras.layers.Lambda(touch)(inputs))
    path = tmp_path / "hostile.keras"
    hostile.save(path)
    marker.unlink()  # building the model ran it once, here, on purpose
    with pytest.raises(ModelFileError, match=r"hostile\.keras: refused: .*Lambda', which runs code"):
        load_model(path)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("name", "content", "problem"),
    [
        ("notes.keras", b"just some text", "not a Keras model file"),
        ("empty.keras", b"", "not a Keras model file"),
        ("fake.h5", b"\x89HDF\r\n\x1a\n" + b"\0" * 100, "cannot be read as a model file"),
    ],
)
def test_files_that_are_not_models(tmp_path: Path, name: str, content: bytes, problem: str) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ModelFileError, match=problem) as err:
        load_model(path)
    assert str(path) in str(err.value)


def test_a_zip_that_is_not_a_model(tmp_path: Path) -> None:
    path = tmp_path / "archive.keras"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("hello.txt", "hi")
    with pytest.raises(ModelFileError, match=r"archive\.keras"):
        load_model(path)


def test_missing_file_and_folder(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match="no such model file"):
        load_model(tmp_path / "missing.keras")
    with pytest.raises(ModelFileError, match="is a folder"):
        load_model(tmp_path)


def test_contents_decide_the_format_not_the_name(model, tmp_path: Path) -> None:
    path = save_model(model, tmp_path / "m.keras")
    renamed = path.rename(tmp_path / "m.h5")
    with pytest.raises(ModelFileError, match="must be named"):
        load_model(renamed)


def test_save_refuses_other_suffixes(model, tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match=r"\.keras"):
        save_model(model, tmp_path / "m.h5")


# -- the layers the app builds, and the opt-in for others ----------------------------------------------


@pytest.fixture(autouse=True)
def _no_opt_in(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(EXTRA_LAYERS_ENV, raising=False)


def layer_classes(config: object) -> set[str]:
    """The class names of every layer in a saved config (nested models' layers included)."""
    found: set[str] = set()
    stack = [config]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if node.get("module") == "keras.layers":
                found.add(node["class_name"])
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return found


def test_every_preset_passes_and_the_allow_list_is_what_the_presets_build(tmp_path: Path) -> None:
    """APP_LAYERS cannot drift from nets.py: it is exactly the layers of the presets' saved models.

    Each is saved as training saves it (compiled with its recipe; test-time augmentation where the preset
    has it), so the optimizer, schedule, loss and metrics in the file pass the check too.
    """
    used: set[str] = set()
    for preset in PRESETS.values():
        model = build_model(preset.name)
        if preset.tta != "none":
            model = with_tta(model, preset.tta)
        compile_for_training(model, preset, preset.learning_rate, total_steps=100)
        path = save_model(model, tmp_path / f"{preset.name}.keras")
        facts = inspect_model_file(path)  # no opt-in
        assert facts["architecture"] == preset.name and facts["input_shape"] == [32, 32, 3]
        used |= layer_classes(json.loads(zipfile.ZipFile(path).read("config.json")))
    assert used == APP_LAYERS
    assert not used & MODEL_CLASSES


@pytest.fixture(scope="module")
def opt_in_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A model with a built-in Keras layer whose sizes the app does not work out (ActivityRegularization),
    as .keras and legacy .h5."""
    import keras

    folder = tmp_path_factory.mktemp("opt-in")
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(8, 3, activation="relu")(inputs)
    x = keras.layers.ActivityRegularization(l1=0.01)(x)
    outputs = keras.layers.Dense(10)(keras.layers.GlobalMaxPooling2D()(x))
    model = keras.Model(inputs, outputs)
    files = {"keras": folder / "regularized.keras", "h5": folder / "regularized.h5"}
    for path in files.values():
        model.save(path)
    return files


@pytest.mark.parametrize("fmt", ["keras", "h5"])
def test_a_keras_layer_the_app_does_not_size_needs_an_opt_in(
    fmt: str, opt_in_files: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = opt_in_files[fmt]
    with pytest.raises(ModelFileError) as refusal:
        load_model(path)
    message = str(refusal.value)
    assert message.startswith(f"{path}: refused: the model uses the layer ActivityRegularization")
    assert (
        f"{EXTRA_LAYERS_ENV}=ActivityRegularization" in message
        and "extra_layers=['ActivityRegularization']" in message
    )
    with pytest.raises(ModelFileError, match="ActivityRegularization"):
        inspect_model_file(path, extra_layers=["BatchNormalization"])  # another layer does not help

    model = load_model(path, extra_layers=["ActivityRegularization"])
    assert "ActivityRegularization" in {type(layer).__name__ for layer in model.layers}
    assert inspect_model_file(path, extra_layers="ActivityRegularization, Flatten")["format"] == fmt
    monkeypatch.setenv(EXTRA_LAYERS_ENV, "ActivityRegularization")
    assert inspect_model_file(path)["format"] == fmt
    monkeypatch.setenv(EXTRA_LAYERS_ENV, "keras")  # every built-in Keras layer
    assert inspect_model_file(path)["format"] == fmt


@pytest.mark.parametrize("name", ["lambda.keras", "lambda.h5", "torch_wrapper.keras", "tfsm_layer.keras"])
def test_code_running_layers_stay_refused_when_every_keras_layer_is_allowed(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, marker = tmp_path / name, tmp_path / "ran"
    HOSTILE[name].build(path, marker)
    monkeypatch.setenv(EXTRA_LAYERS_ENV, "keras")
    for entry in (inspect_model_file, load_model):
        with pytest.raises(ModelFileError, match=r"which runs code from the file \(never allowed\)"):
            entry(path, extra_layers=["keras"])
    assert not marker.exists()


@pytest.mark.parametrize("layer", ["Lambda", "TFSMLayer", "TorchModuleWrapper", "JaxLayer", "FlaxLayer"])
def test_a_code_running_layer_cannot_be_opted_in(
    layer: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "any.keras"
    path.write_bytes(b"never opened")
    with pytest.raises(BadParameter, match=f"^extra_layers: {layer} runs code from the model file"):
        inspect_model_file(path, extra_layers=[layer])
    monkeypatch.setenv(EXTRA_LAYERS_ENV, f"Dropout,{layer}")
    with pytest.raises(BadParameter, match=f"^{EXTRA_LAYERS_ENV}: {layer} runs code"):
        load_model(path)


def test_an_opt_in_that_is_no_class_name_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(EXTRA_LAYERS_ENV, "Dropout; Flatten")
    with pytest.raises(BadParameter, match=f"^{EXTRA_LAYERS_ENV}: 'Dropout; Flatten' is not a Keras layer"):
        inspect_model_file(tmp_path / "missing.keras")


# -- sizes: what the checks work out from a config, before Keras builds anything ----------------------


def test_the_sizes_of_every_app_layer_are_worked_out() -> None:
    assert APP_LAYERS <= layersizes.SIZED_LAYERS == set(layersizes.LAYER_SIZES) | {"InputLayer"}
    assert modelfiles.allowed_layers("") == layersizes.SIZED_LAYERS  # what imports without an opt-in


@pytest.mark.parametrize("preset", list(PRESETS))
def test_every_preset_trained_and_saved_loads(preset: str, images, tmp_path: Path) -> None:
    """As training saves it: compiled, one step trained (the optimizer's state is in the file), TTA on."""
    import keras

    recipe = PRESETS[preset]
    model = build_model(preset)
    if recipe.tta != "none":
        model = with_tta(model, recipe.tta)
    one_hot = compile_for_training(model, recipe, recipe.learning_rate, total_steps=1)
    labels = np.arange(8) % 10
    model.fit(images[:8], keras.utils.to_categorical(labels, 10) if one_hot else labels, verbose=0)
    path = save_model(model, tmp_path / f"{preset}.keras")
    assert any(name.startswith("optimizer/") for name in h5_names(path))
    loaded = load_model(path)
    np.testing.assert_allclose(predict_proba(loaded, images), predict_proba(model, images), atol=1e-5)


def h5_names(path: Path) -> list[str]:
    """The dataset names in a .keras file's weights."""
    with zipfile.ZipFile(path) as z, z.open("model.weights.h5") as f, h5py.File(f) as weights:
        names: list[str] = []
        weights.visititems(lambda name, item: names.append(name) if isinstance(item, h5py.Dataset) else None)
        return names


def test_a_model_continued_from_a_stored_one_loads(images, tmp_path: Path) -> None:
    """Training goes on inside a loaded TTA model and wraps it again: a Functional in a Functional."""
    stored = save_model(with_tta(build_model("accurate"), "flip-translate"), tmp_path / "stored.keras")
    continued = with_tta(without_tta(load_model(stored)), "flip-translate")
    again = load_model(save_model(continued, tmp_path / "continued.keras"))
    np.testing.assert_allclose(predict_proba(again, images), predict_proba(continued, images), atol=1e-5)


def test_a_model_nested_in_another_once_loads(images, tmp_path: Path) -> None:
    """One call of a nested Functional model (as a seed import puts Rescaling in front of it): Keras numbers
    that call 1 in output_layers and 0 in the arguments of the layers it feeds."""
    import keras

    inner = build_model("tutorial")
    inputs = keras.Input((32, 32, 3), name="pixels")
    outer = keras.Model(inputs, inner(keras.layers.Rescaling(2.0, name="double")(inputs)), name="outer")
    outer.save(tmp_path / "nested.keras")
    loaded = load_model(tmp_path / "nested.keras")
    np.testing.assert_allclose(loaded.predict(images, verbose=0), outer.predict(images, verbose=0), atol=1e-5)


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_sizes_agree_with_keras_for_options_the_presets_do_not_use(suffix: str, tmp_path: Path) -> None:
    """Strides, dilation, groups, 'same' padding, channels first, BatchNorm axes, LoRA, shared layers,
    a nested Sequential: the file passes only if each variable and each build input worked out here is
    the one Keras wrote (a legacy .h5 holds LoRA factors, a .keras merges them)."""
    import keras
    from keras import layers

    inputs = keras.Input((32, 32, 3))
    x = layers.Conv2D(6, (3, 5), strides=(2, 1), padding="same", groups=3, use_bias=False)(inputs)
    x = layers.Conv2D(4, 3, dilation_rate=2, lora_rank=2)(x)
    x = layers.MaxPooling2D(3, strides=2, padding="same")(x)
    x = layers.BatchNormalization(axis=1, center=False)(x)
    x = layers.BatchNormalization(scale=False, renorm=True)(x)
    x = layers.Permute((3, 1, 2))(x)
    x = layers.Conv2D(5, 2, data_format="channels_first")(x)
    x = layers.MaxPooling2D(data_format="channels_first")(x)
    x = layers.GlobalMaxPooling2D(data_format="channels_first", keepdims=True)(x)
    x = layers.Dense(7, lora_rank=3)(layers.Flatten()(x))
    shared = layers.Dense(7, name="shared")
    head = keras.Sequential([layers.Dense(10), layers.Activation("softmax")], name="head")
    outputs = head(layers.Average()([shared(x), shared(layers.Activation("relu")(x))]))
    model = keras.Model(inputs, outputs)
    path = tmp_path / f"options{suffix}"
    model.save(path)
    assert inspect_model_file(path)["input_shape"] == [32, 32, 3]
    assert load_model(path).count_params() == model.count_params()


def test_a_seed_file_from_tf_keras_2_passes_and_loads(tmp_path: Path) -> None:
    """The seed saved its tutorial CNN with tf.keras 2 (model.save("modelo.h5")): written here as it wrote
    it (an InputLayer with batch_input_shape, the first layer's too, weights named "kernel:0")."""
    path = tmp_path / "modelo.h5"
    write_tf_keras2_h5(path)
    assert inspect_model_file(path) == {
        "format": "h5",
        "architecture": "sequential",
        "saved_with_keras": "2.12.0",
        "input_shape": [32, 32, 3],
    }
    model = load_model(path)
    assert [w.shape for w in model.weights] == [shape for _, shape in TF_KERAS2_WEIGHTS]
    np.testing.assert_array_equal(model.get_weights()[-1], np.full(10, 0.5, dtype="float32"))


TF_KERAS2_WEIGHTS = [  # (layer, shape), in the order of the model's weights
    ("conv2d", (3, 3, 3, 32)),
    ("conv2d", (32,)),
    ("conv2d_1", (3, 3, 32, 64)),
    ("conv2d_1", (64,)),
    ("conv2d_2", (3, 3, 64, 64)),
    ("conv2d_2", (64,)),
    ("dense", (1024, 64)),
    ("dense", (64,)),
    ("dense_1", (64, 10)),
    ("dense_1", (10,)),
]


def write_tf_keras2_h5(path: Path) -> None:
    """The seed's network (Conv2D 32, pool, Conv2D 64, pool, Conv2D 64, Flatten, Dense 64, Dense 10) as
    tf.keras 2.x saved a Sequential model to .h5, every weight 0.5."""

    def layer(cls: str, name: str, **config: Any) -> dict[str, Any]:
        return {"class_name": cls, "config": {"name": name, "trainable": True, "dtype": "float32", **config}}

    def weighted(cls: str, name: str, **config: Any) -> dict[str, Any]:
        initializers = {
            "kernel_initializer": {"class_name": "GlorotUniform", "config": {"seed": None}},
            "bias_initializer": {"class_name": "Zeros", "config": {}},
        }
        return layer(cls, name, **config, activation="relu", use_bias=True, **initializers)

    conv = {"kernel_size": [3, 3], "strides": [1, 1], "padding": "valid", "dilation_rate": [1, 1]}
    pool = {"pool_size": [2, 2], "padding": "valid", "strides": [2, 2], "data_format": "channels_last"}
    shape = [None, 32, 32, 3]
    image = {"batch_input_shape": shape, "dtype": "float32", "sparse": False, "ragged": False}
    layers = [
        {"class_name": "InputLayer", "config": {**image, "name": "conv2d_input"}},
        weighted("Conv2D", "conv2d", batch_input_shape=shape, filters=32, **conv),
        layer("MaxPooling2D", "max_pooling2d", **pool),
        weighted("Conv2D", "conv2d_1", filters=64, **conv),
        layer("MaxPooling2D", "max_pooling2d_1", **pool),
        weighted("Conv2D", "conv2d_2", filters=64, **conv),
        layer("Flatten", "flatten", data_format="channels_last"),
        weighted("Dense", "dense", units=64),
        weighted("Dense", "dense_1", units=10),
    ]
    config = {"class_name": "Sequential", "config": {"name": "sequential", "layers": layers}}
    with h5py.File(path, "w") as f:
        f.attrs["keras_version"] = "2.12.0"
        f.attrs["backend"] = "tensorflow"
        f.attrs["model_config"] = json.dumps(config)
        group = f.create_group("model_weights")
        names = [entry["config"]["name"] for entry in layers[1:]]
        group.attrs["layer_names"] = [name.encode() for name in names]
        for name in names:
            shapes = [shape for owner, shape in TF_KERAS2_WEIGHTS if owner == name]
            variables = [f"{name}/{variable}:0" for variable in ("kernel", "bias")][: len(shapes)]
            group.create_group(name).attrs["weight_names"] = [v.encode() for v in variables] or np.array(
                [], "S1"
            )
            for variable, shape in zip(variables, shapes, strict=True):
                group[f"{name}/{variable}"] = np.full(shape, 0.5, dtype="float32")


def opted_in(module: str | None = "keras.layers") -> dict[str, Any]:
    """A built-in layer outside the sized ones (it keeps its input's shape; the sizer cannot know that)."""
    return obj(module, "ActivityRegularization", {"name": "reg", "trainable": True, "l1": 0.0, "l2": 0.0})


@pytest.mark.parametrize(
    ("suffix", "layers", "refusal"),
    [
        (  # a .keras file says what a layer after an opted-in one is built for: its weights are counted
            ".keras",
            [opted_in(), flatten(), {**dense(units=100), "build_config": {"input_shape": [None, 3_000_000]}}],
            r"builds over 268,435,456 weights \(300,000,100 by the layer 'dense' \(Dense\)\)",
        ),
        (  # a legacy .h5 file does not: the numbers of the config are held one by one
            ".h5",
            [opted_in(None), flatten(None), dense(None, units=100_000)],
            r"the layer 'dense' \(Dense\) has units 100000, over 65,536",
        ),
        (
            ".keras",
            [
                opted_in(),
                obj(
                    "keras.layers", "Embedding", {"name": "words", "input_dim": 60_000, "output_dim": 60_000}
                ),
            ],
            r"the layer 'words' \(Embedding\) has sizes whose product is over 268,435,456",
        ),
        (
            ".keras",
            [
                opted_in(),
                obj("keras.layers", "Reshape", {"name": "big", "target_shape": [32, 32, 3, 1, 100_000]}),
            ],
            r"the layer 'big' \(Reshape\) has target_shape 100000, over 65,536",
        ),
    ],
)
def test_after_an_opted_in_layer_sizes_are_still_bounded(
    suffix: str, layers: list[dict[str, Any]], refusal: str, tmp_path: Path
) -> None:
    path = tmp_path / f"opted_in{suffix}"
    config = sequential(*layers, module=None if suffix == ".h5" else "keras")
    if suffix == ".h5":
        write_legacy_h5(path, config)
    else:
        write_keras(path, config)
    with pytest.raises(ModelFileError, match=refusal):
        inspect_model_file(path, extra_layers="keras")


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_opted_in_layers_as_keras_saves_them_load(suffix: str, tmp_path: Path) -> None:
    """Sizes after an opted-in layer are bounded, not matched with the file: what Keras saves still loads,
    a wide input (131,072 features into a Dropout) and a layer built from named inputs (attention) too."""
    import keras
    from keras import layers

    inputs = keras.Input((32, 32, 3))
    wide = layers.Dropout(0.5)(layers.Flatten()(layers.Conv2D(128, 1)(inputs)))
    tokens = layers.Reshape((64, 48))(inputs)
    attended = layers.GlobalMaxPooling1D()(layers.MultiHeadAttention(2, 8)(tokens, tokens))
    model = keras.Model(inputs, layers.Dense(10)(layers.Concatenate()([wide, attended])))
    path = tmp_path / f"opted_in{suffix}"
    model.save(path)
    assert load_model(path, extra_layers="keras").count_params() == model.count_params()


@pytest.fixture(scope="module")
def accurate_config(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], list[tuple[int, ...]]]:
    """The accurate preset's config with its test-time augmentation, and its weights' shapes."""
    path = save_model(
        with_tta(build_model("accurate"), "flip-translate"), tmp_path_factory.mktemp("sizes") / "a.keras"
    )
    config, _, weights = modelfiles.read_config(path, "keras")
    return config, weights


# What a changed config may hold instead of any value: wrong types, sizes, names and references.
REPLACEMENTS = [None, 0, -1, 3, 10**12, True, 1.5, float("nan"), "same", "channels_first", [], [None], [3, 3],
                [None, 10**6, 3], {}, ["image", 0, 0], ["image", 7, 0], {"input_shape": 7}]  # fmt: skip


def places(node: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place in a JSON value, as the keys and indexes that lead there."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else []
    return [path, *(found for key, value in items for found in places(value, (*path, key)))]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_a_changed_config_is_refused_cleanly_or_passes(data: st.DataObject, accurate_config) -> None:
    """Any value anywhere in a real config replaced by another: refused with a ModelFileError, or passed."""
    original, weights = accurate_config
    config = copy.deepcopy(original)
    for _ in range(data.draw(st.integers(1, 3))):
        place = data.draw(st.sampled_from(places(config)[1:]))
        parent = config
        for key in place[:-1]:
            parent = parent[key]
        parent[place[-1]] = copy.deepcopy(data.draw(st.sampled_from(REPLACEMENTS)))
    try:
        check_sizes(Path("changed.keras"), config, weights)
    except ModelFileError as e:
        assert str(e).startswith("changed.keras: refused: ") and "\n" not in str(e)
