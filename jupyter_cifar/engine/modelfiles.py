"""Reading and writing model files: a model file is data, and loading one never runs code from it.

``.keras`` (a zip) is the format that leaves this package; the legacy ``.h5`` the seed wrote is read too.
Keras' ``safe_mode`` has been bypassed again and again, so every file is checked here first, without
importing Keras, and Keras only ever sees a file that passed (:func:`inspect_model_file`):

- The container. A ``.keras`` zip is bounded before its directory is parsed (entries, directory size),
  then per entry (unpacked size, expansion ratio: zip bombs; names that leave a folder; duplicates;
  anything but Keras' own entries). Every HDF5 file (a legacy ``.h5``, a ``.keras``'s
  ``model.weights.h5``) must hold plain groups and datasets stored in that file: no external storage
  or virtual datasets (CVE-2026-1669, CVE-2026-12480: they read other local files), no external or soft
  links, and no dataset declaring far more than it stores or more weights than a CIFAR model has
  (CVE-2026-0897: shape bombs). These checks live in :mod:`jupyter_cifar.engine.modelcontainers`.
- The config. Every object it names must be one of Keras' building blocks named the way Keras names
  them: no layer that runs code (Lambda bytecode, CVE-2024-3660 and, in ``.h5``, CVE-2025-9905;
  TorchModuleWrapper's pickle, CVE-2025-49655; TFSMLayer's SavedModel, CVE-2026-1462; JaxLayer,
  FlaxLayer), no module or function outside Keras (CVE-2025-1550, CVE-2025-8747), nothing that turns
  safe mode off (CVE-2025-9906), no registered custom object. And every layer must be one whose sizes
  are worked out here (:data:`~jupyter_cifar.engine.layersizes.SIZED_LAYERS`: the presets' layers, the common
  Sequential idioms' and ``keras.applications``' image families'), unless the user allows more with
  ``JUPYTER_CIFAR_EXTRA_LAYERS`` or the ``extra_layers`` argument: code-running layers stay refused
  even then.
- The sizes. Keras builds every layer's variables from the config before it reads one weight, so the
  shapes are worked out first, without Keras (:mod:`jupyter_cifar.engine.modelsizes`): a model that would
  allocate too much, or build other variables than its weights file holds, is refused.

Loading then goes through Keras' own ``safe_mode`` and without the compile config (a loaded model is
recompiled by whoever trains it), as a second line.
"""

from __future__ import annotations

import builtins
import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import BadParameter, ModelFileError
from .layersizes import SIZED_LAYERS
from .modelcontainers import one_line, read_config, sniff_format
from .modelsizes import MAX_LAYERS, MODEL_CLASSES, check_sizes

if TYPE_CHECKING:
    import keras

#: The layers the presets in :mod:`jupyter_cifar.engine.nets` build, the seed's tutorial CNN included (the
#: ``tutorial`` preset); a test keeps this equal to what the presets' saved models hold.
APP_LAYERS = frozenset(
    {
        "InputLayer",
        "Rescaling",
        "Conv2D",
        "MaxPooling2D",
        "BatchNormalization",
        "Activation",
        "GlobalMaxPooling2D",
        "Flatten",
        "Dense",
        "Permute",
        "Average",
    }
)
#: Layers that run code from the file or another runtime's model: refused even when opted in.
CODE_LAYERS = frozenset({"Lambda", "TFSMLayer", "TorchModuleWrapper", "JaxLayer", "FlaxLayer"})
#: Comma-separated Keras layer class names a user allows on top of :data:`SIZED_LAYERS`, or ``keras``.
EXTRA_LAYERS_ENV = "JUPYTER_CIFAR_EXTRA_LAYERS"
ANY_KERAS_LAYER = "keras"

# Modules the config's other objects may name: Keras' initializers, optimizers, losses, ...
_SUPPORT_MODULES = (
    "keras.initializers",
    "keras.regularizers",
    "keras.constraints",
    "keras.activations",
    "keras.optimizers",
    "keras.losses",
    "keras.metrics",
)
_MODEL_MODULES = frozenset(
    {"keras.models", "keras.src.models.functional", "keras.src.models.sequential", "keras.src.models.model"}
)
_TOP_LEVEL = MODEL_CLASSES | {"DTypePolicy", "FloatDTypePolicy"}  # what module "keras" may name
# This package's own registered objects that a training checkpoint's compile config may name, exactly as
# Keras writes them (module, class, registered name): their code is ours, installed, never the file's;
# their configs hold numbers. The optimizer of the presets that train their kernels with Muon, under the
# module it lives in and the one it lived in before the engine became a package (checkpoints of jobs
# written then; Keras finds it by its registered name either way), and the learning-rate schedule of a run
# with a time budget (around one of Keras' schedules).
_OWN_OBJECTS = frozenset(
    {
        *(
            (module, "KernelMuon", "jupyter_cifar>KernelMuon")
            for module in ("jupyter_cifar.engine.muon", "jupyter_cifar.muon")
        ),
        ("jupyter_cifar.engine.clock", "OnTheClock", "jupyter_cifar>OnTheClock"),
    }
)
# Keras saves a function it owns (a loss passed as a function) as module "builtins", class "function" and
# looks the name up among its activations, losses and metrics only; older Keras imported it from anywhere.
_FUNCTION_MODULES = frozenset({"builtins", "keras.activations", "keras.losses", "keras.metrics"})
# Keras' markers for values (they build a tensor, an array, bytes, a slice; they import nothing).
_DATA_MARKERS = frozenset(
    {"__keras_tensor__", "__tensor__", "__numpy__", "__bytes__", "__ellipsis__", "__slice__"}
)
# Keys under which a config holds layers (legacy configs name a layer's class without its module).
_LAYER_KEYS = frozenset({"layers", "layer", "forward_layer", "backward_layer", "cell", "cells"})


def allowed_layers(extra_layers: str | Iterable[str] | None = None) -> frozenset[str]:
    """The layer class names a model may use: :data:`SIZED_LAYERS` and what the user opted in to.

    The opt-ins are ``JUPYTER_CIFAR_EXTRA_LAYERS`` and ``extra_layers`` together: Keras layer class
    names, or ``keras`` for every built-in Keras layer. A code-running layer cannot be opted in.
    """
    from_env = os.environ.get(EXTRA_LAYERS_ENV, "")
    named = _layer_names(EXTRA_LAYERS_ENV, from_env)
    if extra_layers is not None:
        named |= _layer_names("extra_layers", extra_layers)
    return SIZED_LAYERS | named


def _layer_names(param: str, value: str | Iterable[str]) -> frozenset[str]:
    items = value.split(",") if isinstance(value, str) else list(value)
    names = frozenset(str(item).strip() for item in items if str(item).strip())
    for name in names:
        if name in CODE_LAYERS:
            raise BadParameter(param, f"{name} runs code from the model file and cannot be allowed")
        if not name.isidentifier():
            raise BadParameter(param, f"{name!r} is not a Keras layer class name (e.g. Dropout, or 'keras')")
    return names


def check_config(path: Path, config: Any, extra_layers: str | Iterable[str] | None = None) -> None:
    """Refuse a config naming anything but Keras' own building blocks and the allowed layers."""
    allowed = allowed_layers(extra_layers)
    layers = 0
    stack: list[tuple[Any, bool]] = [(config, True)]  # (node, whether a layer stands there)
    while stack:
        node, layer_slot = stack.pop()
        if isinstance(node, list):
            stack.extend((item, layer_slot) for item in node)
        elif isinstance(node, dict):
            if "class_name" in node:
                layers += _check_object(path, node, layer_slot, allowed)
                if layers > MAX_LAYERS:
                    raise ModelFileError(f"{path}: refused: over {MAX_LAYERS:,} layers")
            stack.extend((value, key in _LAYER_KEYS) for key, value in node.items())


def _check_object(path: Path, node: dict[str, Any], layer_slot: bool, allowed: frozenset[str]) -> bool:
    """Check one ``{"class_name", "module", "config", ...}`` object; return whether it is a layer."""
    cls, module, registered = node.get("class_name"), node.get("module"), node.get("registered_name")
    if not isinstance(cls, str) or not isinstance(module, str | None):
        raise ModelFileError(f"{path}: refused: an object names no class ({str(node)[:100]})")
    where = repr(f"{module}.{cls}" if module else cls)[:100]
    if cls in _DATA_MARKERS:
        return False
    if cls == "function":
        function = node.get("config")
        if _keras_function(module, function, registered):
            return False
        where = repr(f"{module}.{function}")[:100]
        raise ModelFileError(f"{path}: refused: the model asks for the function {where}, which is not Keras'")
    if (module, cls, registered) in _OWN_OBJECTS and not layer_slot:
        return False
    if cls in CODE_LAYERS or cls.startswith("__"):
        raise ModelFileError(
            f"{path}: refused: the model asks for {where}, which runs code from the file (never allowed)"
        )
    if not cls.isidentifier() or registered not in (None, cls):
        shown = repr(registered)[:100]
        raise ModelFileError(f"{path}: refused: {where} is registered as {shown}, not a Keras class name")
    if not _keras_module(module, cls):
        if module is not None and _within(module, "keras.src.ops"):
            # ``x * y`` or ``keras.ops.multiply`` on a functional model's tensors (MobileNetV3, ConvNeXt):
            # Keras' own code, but operations have no size rules here, so nothing would bound them.
            raise ModelFileError(
                f"{path}: refused: the model applies Keras' operation {where} to its tensors directly (as "
                f"`x * y` or keras.ops in a functional model), whose sizes this app cannot check yet; "
                f"build it with the layer (keras.layers.{cls} where there is one) instead"
            )
        raise ModelFileError(
            f"{path}: refused: the model asks for {where}, which is not a Keras building block"
        )
    is_layer = layer_slot or (module is not None and _within(module, "keras.layers"))
    if is_layer and cls not in MODEL_CLASSES and cls not in allowed and ANY_KERAS_LAYER not in allowed:
        raise ModelFileError(
            f"{path}: refused: the model uses the layer {cls}, whose sizes this app cannot check; if you "
            f"trust the file, allow it with {EXTRA_LAYERS_ENV}={cls} (or extra_layers=[{cls!r}]; "
            f"{EXTRA_LAYERS_ENV}={ANY_KERAS_LAYER} allows every built-in Keras layer)"
        )
    return is_layer


def _keras_function(module: str | None, function: Any, registered: Any) -> bool:
    """Whether a ``function`` object names one of Keras' activations, losses or metrics."""
    return (
        module in _FUNCTION_MODULES
        and isinstance(function, str)
        and function.isidentifier()
        and registered in (None, "function", function)
        and not (module == "builtins" and hasattr(builtins, function))  # exec, eval, open, ...
    )


def _keras_module(module: str | None, cls: str) -> bool:
    if module is None:
        return True  # legacy configs: Keras looks the class up among its own (or registered) classes
    if module == "keras":
        return cls in _TOP_LEVEL
    if module in _MODEL_MODULES:
        return cls in MODEL_CLASSES
    return _within(module, "keras.layers", *_SUPPORT_MODULES)


def _within(module: str, *packages: str) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


# -- entry points --------------------------------------------------------------------------------------


def inspect_model_file(
    path: str | os.PathLike[str], *, extra_layers: str | Iterable[str] | None = None
) -> dict[str, Any]:
    """Check a model file without running anything from it (no Keras import); return its facts.

    ``extra_layers``: Keras layer class names allowed on top of the app's (see :func:`allowed_layers`).
    """
    path = Path(path)
    allowed_layers(extra_layers)  # a bad opt-in is reported before the file is opened
    fmt = sniff_format(path)
    config, meta, weights = read_config(path, fmt)
    check_config(path, config, extra_layers)
    check_sizes(path, config, weights)
    inner = config.get("config")
    inner = inner if isinstance(inner, dict) else {}
    facts: dict[str, Any] = {"format": fmt, "architecture": inner.get("name") or config.get("class_name")}
    if meta.get("keras_version"):
        facts["saved_with_keras"] = meta["keras_version"]
    for layer in inner.get("layers") or []:
        layer_config = layer.get("config") if isinstance(layer, dict) else None
        if isinstance(layer_config, dict):
            shape = layer_config.get("batch_shape") or layer_config.get("batch_input_shape")
            if isinstance(shape, list):
                facts["input_shape"] = shape[1:]
                break
    return facts


def uses_layer(path: str | os.PathLike[str], classes: Iterable[str]) -> bool:
    """Whether a model file's config names one of these layer classes (nested models' too), read without
    Keras: check the file first (:func:`inspect_model_file`)."""
    path = Path(path)
    config, _, _ = read_config(path, sniff_format(path))
    wanted, stack = frozenset(classes), [config]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if node.get("class_name") in wanted:
                return True
            stack += node.values()
        elif isinstance(node, list):
            stack += node
    return False


def load_model(
    path: str | os.PathLike[str], *, extra_layers: str | Iterable[str] | None = None
) -> keras.Model:
    """Load a ``.keras`` or ``.h5`` model for inference or further training, in safe mode.

    The file is checked first (:func:`inspect_model_file`), so Keras only ever sees a model made of its
    own building blocks and the allowed layers; ``safe_mode`` stays on as a second line.
    """
    path = Path(path)
    fmt = inspect_model_file(path, extra_layers=extra_layers)["format"]
    suffix = ".keras" if fmt == "keras" else ".h5"
    if path.suffix != suffix:
        # Keras routes by file name; give it the name that matches the bytes.
        raise ModelFileError(f"{path}: a {fmt} file must be named *{suffix} to be loaded")
    import keras

    try:
        model = keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as e:  # Keras raises many types for bad files; all mean "not loadable"
        raise ModelFileError(f"{path}: cannot be loaded as a model: {_reason(e)}") from None
    if not isinstance(model, keras.Model):
        raise ModelFileError(f"{path}: holds no Keras model")
    return model


def save_model(model: keras.Model, path: str | os.PathLike[str]) -> Path:
    """Save as a standard ``.keras`` file, atomically (a reader never sees a half-written file)."""
    path = Path(path)
    if path.suffix != ".keras":
        raise ModelFileError(f"{path}: model files are saved as .keras")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.keras")
    try:
        model.save(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _reason(error: Exception) -> str:
    text = one_line(error)
    if "safe_mode" in text or "Lambda" in text:
        return "it asks to run code (e.g. a Lambda layer), which is refused"
    return text[:300] or type(error).__name__
