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
  (CVE-2026-0897: shape bombs).
- The config. Every object it names must be one of Keras' building blocks named the way Keras names
  them: no layer that runs code (Lambda bytecode, CVE-2024-3660 and, in ``.h5``, CVE-2025-9905;
  TorchModuleWrapper's pickle, CVE-2025-49655; TFSMLayer's SavedModel, CVE-2026-1462; JaxLayer,
  FlaxLayer), no module or function outside Keras (CVE-2025-1550, CVE-2025-8747), nothing that turns
  safe mode off (CVE-2025-9906), no registered custom object. And every layer must be one the app builds
  (:data:`APP_LAYERS`), unless the user allows more with ``JUPYTER_CIFAR_EXTRA_LAYERS`` or the
  ``extra_layers`` argument: code-running layers stay refused even then.
- The sizes. Keras builds every layer's variables from the config before it reads one weight: a 13 KB
  file asking for ``Dense(units=20000)`` after a ``Flatten`` cost 0.8 GB of memory before Keras found
  that the weights file did not fit. So the shapes are worked out here as Keras would work them out,
  from each model's input through its layers (:func:`check_sizes`), and a model is refused if it would
  allocate more than :data:`MAX_WEIGHTS` weights or :data:`MAX_ACTIVATIONS` numbers per image, or if
  the variables it would build are not the ones its weights file holds.

Loading then goes through Keras' own ``safe_mode`` and without the compile config (a loaded model is
recompiled by whoever trains it), as a second line.
"""

from __future__ import annotations

import builtins
import contextlib
import heapq
import io
import json
import math
import os
import shutil
import stat
import struct
import tempfile
import zipfile
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, NamedTuple

from .errors import BadParameter, ModelFileError

if TYPE_CHECKING:
    import h5py
    import keras

#: The layers the presets in :mod:`jupyter_cifar.nets` build, the seed's tutorial CNN included (the
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
#: The models that hold them: Functional (the presets) and Sequential (the seed's legacy ``.h5``).
MODEL_CLASSES = frozenset({"Functional", "Sequential", "Model"})
#: Layers that run code from the file or another runtime's model: refused even when opted in.
CODE_LAYERS = frozenset({"Lambda", "TFSMLayer", "TorchModuleWrapper", "JaxLayer", "FlaxLayer"})
#: Comma-separated Keras layer class names a user allows on top of :data:`APP_LAYERS`, or ``keras``.
EXTRA_LAYERS_ENV = "JUPYTER_CIFAR_EXTRA_LAYERS"
ANY_KERAS_LAYER = "keras"

# Bounds. A CIFAR model is small: the accurate preset holds 2.0 M weights (an 8 MB file; about twice
# that with the optimizer's state after training) and a 30 KB config. These leave room for far bigger
# networks and still refuse what would exhaust a kernel's memory before Keras could notice anything.
MAX_CONFIG_BYTES = 16 << 20  # config.json, metadata.json, an .h5's model_config
MAX_LAYERS = 1000  # in a config, nested models' included (the presets: under 50)
MAX_WEIGHTS = 1 << 28  # numbers in all datasets together: 268 M (1 GiB of float32)
MAX_UNPACKED_BYTES = 2 << 30  # a .keras file's entries together, or an .h5 file
MAX_EXPANSION = 100  # declared / stored bytes of any zip entry or HDF5 dataset larger than
EXPANSION_FLOOR = 1 << 20  # 1 MiB (Keras writes both uncompressed, 1:1)
MAX_ZIP_ENTRIES = 1000
MAX_ZIP_DIRECTORY_BYTES = 1 << 20  # read from the zip's end record before the directory is parsed
MAX_HDF5_LINKS = 20_000  # groups, datasets and links in one HDF5 file (the accurate preset: 110)
# Numbers in all layers' outputs for one image, each call of a nested model counted: 64 M (256 MiB of
# float32). Keras holds a batch's worth while it runs a model (all of them while it trains): a batch of
# 32 images at this bound takes 8 GiB. The accurate preset: 0.73 M (its mirrored pass included).
MAX_ACTIVATIONS = 1 << 26
MAX_DIM = 1 << 16  # a size-deciding number of a layer whose sizes cannot be worked out (see _bounded)
MAX_RANK = 16  # dimensions of a tensor (Keras' built-in layers take at most 5, the batch's included)
MAX_NESTING = 16  # models inside models (the accurate preset: 2 levels)

_H5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_Readable = IO[bytes] | io.RawIOBase  # a file h5py can open
_KERAS_ENTRIES = frozenset({"config.json", "metadata.json", "model.weights.h5"})
_ZIP_END = struct.Struct("<4s4H2LH")  # the end of central directory record
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
# Keras saves a function it owns (a loss passed as a function) as module "builtins", class "function" and
# looks the name up among its activations, losses and metrics only; older Keras imported it from anywhere.
_FUNCTION_MODULES = frozenset({"builtins", "keras.activations", "keras.losses", "keras.metrics"})
# Keras' markers for values (they build a tensor, an array, bytes, a slice; they import nothing).
_DATA_MARKERS = frozenset(
    {"__keras_tensor__", "__tensor__", "__numpy__", "__bytes__", "__ellipsis__", "__slice__"}
)
# Keys under which a config holds layers (legacy configs name a layer's class without its module).
_LAYER_KEYS = frozenset({"layers", "layer", "forward_layer", "backward_layer", "cell", "cells"})


def sniff_format(path: Path) -> str:
    """'keras' or 'h5' from the file's first bytes (never from its name alone)."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except IsADirectoryError:
        raise ModelFileError(f"{path}: is a folder, not a model file") from None
    except FileNotFoundError:
        raise ModelFileError(f"{path}: no such model file") from None
    except OSError as e:
        raise ModelFileError(f"{path}: cannot be read ({e.strerror or e})") from None
    if head.startswith(_H5_SIGNATURE):
        return "h5"
    if head.startswith(b"PK") and zipfile.is_zipfile(path):
        return "keras"
    raise ModelFileError(f"{path}: not a Keras model file (expected a .keras zip or an .h5 file)")


Shape = tuple[int, ...]  # a variable's shape, or one image's (without the batch dimension)


class ModelContents(NamedTuple):
    """What a model file holds, read without Keras."""

    config: dict[str, Any]
    meta: dict[str, Any]
    weights: list[Shape]  # the shapes of the layers' variables in the weights file (no optimizer's)


def read_config(path: Path, fmt: str) -> ModelContents:
    """The model's config, the file's metadata and its weights' shapes, read once the container passed."""
    try:
        config, meta, weights = _read_keras(path) if fmt == "keras" else _read_h5(path)
    except ModelFileError:
        raise
    except (OSError, ValueError, KeyError, RuntimeError, zipfile.BadZipFile) as e:
        # RuntimeError: HDF5 errors, and RecursionError from a deeply nested config.json.
        raise ModelFileError(f"{path}: cannot be read as a model file ({_one_line(e)})") from None
    if not isinstance(config, dict) or not isinstance(meta, dict):
        raise ModelFileError(f"{path}: its config is not a model description")
    return ModelContents(config, meta, weights)


def _layer_weights(datasets: dict[str, Shape], group: str) -> list[Shape]:
    return [shape for name, shape in datasets.items() if name.startswith(group)]


def _read_keras(path: Path) -> tuple[Any, Any, list[Shape]]:
    _check_zip_directory(path)
    with zipfile.ZipFile(path) as z:
        _check_zip_entries(path, z.infolist())
        names = set(z.namelist())
        if "config.json" not in names or "model.weights.h5" not in names:
            raise ModelFileError(f"{path}: a .keras file needs config.json and model.weights.h5")
        config = json.loads(_read_entry(path, z, "config.json"))
        meta = json.loads(_read_entry(path, z, "metadata.json")) if "metadata.json" in names else {}
        with _opened_entry(path, z, z.getinfo("model.weights.h5")) as weights:
            if weights.read(8) != _H5_SIGNATURE:
                raise ModelFileError(f"{path}: its model.weights.h5 is not an HDF5 file")
            weights.seek(0)
            datasets = _check_hdf5(path, weights, "its model.weights.h5")
    return config, meta, _layer_weights(datasets, "layers/")  # beside "optimizer/"


def _read_h5(path: Path) -> tuple[Any, Any, list[Shape]]:
    size = path.stat().st_size
    if size > MAX_UNPACKED_BYTES:
        raise ModelFileError(f"{path}: refused: {_size(size)} is more than a model file may be")
    import h5py

    with h5py.File(path, "r") as f:
        datasets = _check_hdf5(path, f, "the file")
        raw = f.attrs.get("model_config")
        if raw is None:
            raise ModelFileError(f"{path}: an .h5 file without a model config (weights only?)")
        if len(raw) > MAX_CONFIG_BYTES:
            raise ModelFileError(f"{path}: its model config is implausibly large")
        meta = {"keras_version": _text(f.attrs.get("keras_version"))}
        weights = _layer_weights(datasets, "model_weights/")  # beside "optimizer_weights/"
        return json.loads(raw), meta, weights


def _text(value: Any) -> str | None:
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return None if value is None else str(value)


# -- the zip -------------------------------------------------------------------------------------------


def _check_zip_directory(path: Path) -> None:
    """Refuse a zip whose central directory is too big to parse, from its end record alone.

    :class:`zipfile.ZipFile` reads the whole directory into memory on opening, so a file of millions of
    tiny entries would cost gigabytes before any entry could be counted.
    """
    with open(path, "rb") as f:
        end = f.seek(0, os.SEEK_END)
        f.seek(max(0, end - _ZIP_END.size - 0xFFFF))  # the record, then a comment of up to 64 KiB
        tail = f.read()
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or len(tail) - at < _ZIP_END.size:
        raise ModelFileError(f"{path}: cannot be read as a model file (no zip end record)")
    _, _, _, _, entries, directory, offset, _ = _ZIP_END.unpack_from(tail, at)
    if entries == 0xFFFF or 0xFFFFFFFF in (directory, offset):  # the real values are in a ZIP64 record
        raise ModelFileError(f"{path}: refused: a ZIP64 archive (over 4 GiB or 65,535 entries) is no model")
    if entries > MAX_ZIP_ENTRIES or directory > MAX_ZIP_DIRECTORY_BYTES:
        raise ModelFileError(
            f"{path}: refused: its zip directory lists {entries:,} entries in {_size(directory)} "
            f"(a .keras file holds a few; at most {MAX_ZIP_ENTRIES:,} are read)"
        )


def _check_zip_entries(path: Path, infos: list[zipfile.ZipInfo]) -> None:
    """Names, kinds and sizes of a .keras file's entries, as declared (nothing is unpacked here)."""
    if len(infos) > MAX_ZIP_ENTRIES:
        raise ModelFileError(f"{path}: refused: {len(infos):,} zip entries (at most {MAX_ZIP_ENTRIES:,})")
    seen: set[str] = set()
    total = 0
    for info in infos:
        name = info.filename
        shown = repr(name[:100])
        if _leaves_folder(name):
            raise ModelFileError(f"{path}: refused: the zip entry {shown} has a path that leaves its folder")
        if name in seen:
            raise ModelFileError(f"{path}: refused: the zip entry {shown} appears twice")
        seen.add(name)
        if name not in _KERAS_ENTRIES and not name.startswith("assets/"):
            raise ModelFileError(
                f"{path}: refused: unexpected zip entry {shown} (a .keras file holds config.json, "
                "metadata.json, model.weights.h5 and assets/)"
            )
        if stat.S_ISLNK(info.external_attr >> 16):
            raise ModelFileError(f"{path}: refused: the zip entry {shown} is a symbolic link")
        if info.flag_bits & 0x1:
            raise ModelFileError(f"{path}: refused: the zip entry {shown} is encrypted")
        if info.file_size > EXPANSION_FLOOR and info.file_size > MAX_EXPANSION * info.compress_size:
            raise ModelFileError(
                f"{path}: refused: the zip entry {shown} unpacks {_size(info.compress_size)} into "
                f"{_size(info.file_size)} (a zip bomb)"
            )
        total += info.file_size
        if total > MAX_UNPACKED_BYTES:
            raise ModelFileError(
                f"{path}: refused: its entries unpack to over {_size(MAX_UNPACKED_BYTES)} "
                f"(the zip entry {shown} declares {_size(info.file_size)})"
            )


def _leaves_folder(name: str) -> bool:
    """Whether a zip entry's name would be written outside the folder it is unpacked into."""
    parts = name.replace("\\", "/").split("/")
    return name.startswith(("/", "\\")) or ".." in parts or ":" in parts[0] or "\0" in name


@contextlib.contextmanager
def _opened_entry(path: Path, z: zipfile.ZipFile, info: zipfile.ZipInfo) -> Iterator[_Readable]:
    """A zip entry as a seekable file for h5py: in place if stored (as Keras writes it), else a copy.

    h5py reads an HDF5 file's metadata from here and there; through zipfile, every backward seek would
    unpack the entry again from its start (half a second for the accurate preset's weights).
    """
    if info.compress_type != zipfile.ZIP_STORED:
        with z.open(info) as entry, tempfile.TemporaryFile() as copy:
            shutil.copyfileobj(entry, copy, 1 << 20)  # bounded: the entry's declared size was checked
            copy.seek(0)
            yield copy
        return
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        header = f.read(30)  # the entry's local header, whose name and extra field precede its bytes
        if len(header) < 30 or not header.startswith(b"PK\x03\x04"):
            raise ModelFileError(f"{path}: cannot be read as a model file (a damaged zip entry)")
        name_length, extra_length = struct.unpack_from("<2H", header, 26)
        yield _EntryView(f, info.header_offset + 30 + name_length + extra_length, info.file_size)


class _EntryView(io.RawIOBase):
    """Bytes ``[start, start + size)`` of an open file, read-only and seekable: a stored zip entry."""

    def __init__(self, file: io.BufferedReader, start: int, size: int) -> None:
        super().__init__()
        self._file, self._start, self._size, self._at = file, start, size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._at

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self._at, os.SEEK_END: self._size}[whence]
        self._at = max(0, base + offset)
        return self._at

    def readinto(self, buffer: Any) -> int:
        wanted = max(0, min(len(buffer), self._size - self._at))
        self._file.seek(self._start + self._at)
        got = self._file.readinto(memoryview(buffer)[:wanted])
        self._at += got
        return got


def _read_entry(path: Path, z: zipfile.ZipFile, name: str) -> bytes:
    size = z.getinfo(name).file_size
    if size > MAX_CONFIG_BYTES:
        raise ModelFileError(f"{path}: refused: its {name} is implausibly large ({_size(size)})")
    with z.open(name) as f:
        return f.read()  # at most the declared size: zipfile stops there (and checks the CRC)


# -- HDF5 ----------------------------------------------------------------------------------------------


def _check_hdf5(path: Path, source: h5py.File | _Readable, what: str) -> dict[str, Shape]:
    """Refuse an HDF5 file that reaches outside itself or declares more than it holds; return its datasets'
    shapes by name.

    Only metadata is read (links, dataset layouts and shapes): no dataset's values, so an external or
    virtual dataset is found without the file it names being opened.
    """
    import h5py

    datasets: dict[str, Shape] = {}
    if isinstance(source, h5py.File):
        problem = _hdf5_problem(source, datasets)
    else:
        with h5py.File(source, "r") as f:
            problem = _hdf5_problem(f, datasets)
    if problem:
        raise ModelFileError(f"{path}: refused: {what} {problem}")
    return datasets


def _hdf5_problem(f: h5py.File, datasets: dict[str, Shape]) -> str | None:
    """What is wrong with an HDF5 file, or None; fills ``datasets`` with its datasets' shapes."""
    import h5py

    links = weights = 0

    def visit(name: str, link: Any) -> str | None:
        # h5py cannot pass an exception up through the visit: a problem is returned, which stops it.
        nonlocal links, weights
        links += 1
        if links > MAX_HDF5_LINKS:
            return f"holds over {MAX_HDF5_LINKS:,} HDF5 objects"
        if isinstance(link, h5py.ExternalLink):
            return f"links {name!r} to another file ({link.filename!r}), which would be read"
        if not isinstance(link, h5py.HardLink):
            return f"has a {type(link).__name__} {name!r} (Keras writes plain groups and datasets only)"
        try:
            obj = f.get(name)
            if not isinstance(obj, h5py.Dataset):
                return None
            problem = _dataset_problem(name, obj)
            datasets[name] = tuple(obj.shape or ())
            weights += math.prod(datasets[name])
        except (OSError, ValueError, KeyError, RuntimeError) as e:
            return f"cannot be read as HDF5 ({_one_line(e)})"
        if problem:
            return problem
        if weights > MAX_WEIGHTS:
            return f"declares over {MAX_WEIGHTS:,} weights (a CIFAR model has a few million)"
        return None

    result: str | None = f.visititems_links(visit)
    return result


def _dataset_problem(name: str, ds: h5py.Dataset) -> str | None:
    # In this order: a virtual dataset's shape may be worked out from the files it maps.
    if ds.external:
        return f"has a dataset {name!r} stored in another file ({ds.external[0][0]!r}), which would be read"
    if ds.is_virtual:
        sources = sorted({source.file_name for source in ds.virtual_sources()})
        return f"has a virtual dataset {name!r} mapping {', '.join(map(repr, sources))}, which would be read"
    declared = math.prod(ds.shape or ()) * ds.dtype.itemsize
    stored = ds.id.get_storage_size()
    if declared > EXPANSION_FLOOR and declared > MAX_EXPANSION * stored:
        return (
            f"has a dataset {name!r} declaring {_size(declared)} but storing {_size(stored)} (a shape bomb)"
        )
    return None


# -- the config ----------------------------------------------------------------------------------------


def allowed_layers(extra_layers: str | Iterable[str] | None = None) -> frozenset[str]:
    """The layer class names a model may use: :data:`APP_LAYERS` and what the user opted in to.

    The opt-ins are ``JUPYTER_CIFAR_EXTRA_LAYERS`` and ``extra_layers`` together: Keras layer class
    names, or ``keras`` for every built-in Keras layer. A code-running layer cannot be opted in.
    """
    from_env = os.environ.get(EXTRA_LAYERS_ENV, "")
    named = _layer_names(EXTRA_LAYERS_ENV, from_env)
    if extra_layers is not None:
        named |= _layer_names("extra_layers", extra_layers)
    return APP_LAYERS | named


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
    if cls in CODE_LAYERS or cls.startswith("__"):
        raise ModelFileError(
            f"{path}: refused: the model asks for {where}, which runs code from the file (never allowed)"
        )
    if not cls.isidentifier() or registered not in (None, cls):
        shown = repr(registered)[:100]
        raise ModelFileError(f"{path}: refused: {where} is registered as {shown}, not a Keras class name")
    if not _keras_module(module, cls):
        raise ModelFileError(
            f"{path}: refused: the model asks for {where}, which is not a Keras building block"
        )
    is_layer = layer_slot or (module is not None and _within(module, "keras.layers"))
    if is_layer and cls not in MODEL_CLASSES and cls not in allowed and ANY_KERAS_LAYER not in allowed:
        raise ModelFileError(
            f"{path}: refused: the model uses the layer {cls}, which this app does not build; if you trust "
            f"the file, allow it with {EXTRA_LAYERS_ENV}={cls} (or extra_layers=[{cls!r}]; "
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


# -- the sizes -----------------------------------------------------------------------------------------


class _Refused(Exception):
    """Why a config is refused, found while its sizes are worked out (the caller adds the file's name)."""


_Ref = tuple[str, int, int]  # a tensor in a Functional graph: (layer name, node index, tensor index)
_Shapes = list[Shape | None]  # the shapes of a call's inputs or outputs (None: not known)
# A layer's sizes from its config and its inputs' shapes: (its output's shape, its variables' shapes,
# its LoRA factors' shapes: a legacy .h5 file holds them, a .keras file holds them merged into the kernel).
_Sizes = tuple[Shape, list[Shape], list[Shape]]
_Infer = Callable[[dict[str, Any], list[Shape]], _Sizes]
# Config keys whose numbers decide what a layer of Keras allocates (its own or a wrapped layer's):
# variables (units, filters, ...) or outputs (shapes, repeats, windows).
_SIZE_KEYS = frozenset(
    {
        "units", "filters", "kernel_size", "input_dim", "output_dim", "depth_multiplier", "num_heads",
        "key_dim", "value_dim", "lora_rank", "max_tokens", "num_bins", "num_tokens", "batch_shape",
        "batch_input_shape", "input_shape", "shape", "target_shape", "n", "size", "pool_size", "strides",
        "dilation_rate", "cropping", "padding",
    }
)  # fmt: skip


def check_sizes(path: Path, config: dict[str, Any], weights: list[Shape]) -> None:
    """Refuse a model whose config would make Keras allocate too much, or build other variables than
    ``weights`` (the shapes its weights file holds).

    Keras builds every variable from the config before it reads the weights file, and only then finds
    out whether they fit; so the shapes are worked out here first (:class:`_Sizer`), without Keras.
    """
    sizer = _Sizer()
    try:
        if _layer(config)["class_name"] not in MODEL_CLASSES:
            raise _Refused(f"its config describes {_named(config)}, not a model")
        sizer.model(config, None, 0)
    except _Refused as e:
        raise ModelFileError(f"{path}: refused: {e}") from None
    if sizer.exact and sorted(weights) not in (sorted(sizer.weights), sorted(sizer.weights + sizer.factors)):
        raise ModelFileError(f"{path}: refused: {_mismatch(sizer.weights, weights)}")


class _Sizer:
    """Works out a model's sizes from its config the way Keras builds it, and stops at a bound.

    Shapes flow from each model's input layers through its layers: along ``inbound_nodes`` in a
    Functional model (the legacy lists of ``[layer, node, tensor]`` too), in order in a Sequential one.
    A layer's variables follow from its config and its input's shape as its ``build`` makes them. A
    layer's ``build_config`` must agree with its input: Keras builds the layer from it first.
    """

    def __init__(self) -> None:
        self.weights: list[Shape] = []  # the variables Keras would load from the weights file
        self.factors: list[Shape] = []  # LoRA factors
        self.allocated = 0  # numbers in every variable Keras creates
        self.activations = 0  # numbers all layers output for one image
        self.exact = True  # False once the sizes after an opted-in layer could not be worked out
        # id(layer) -> (its first call's inputs, its outputs, the activations that call counted)
        self._calls: dict[int, tuple[_Shapes, _Shapes, int]] = {}

    def model(self, model: dict[str, Any], given: _Shapes | None, depth: int) -> _Shapes:
        """The output shapes of ``model`` called on ``given`` (None: on the inputs it declares)."""
        if depth > MAX_NESTING:
            raise _Refused(f"it nests models over {MAX_NESTING} deep")
        config = _dict(model.get("config"), f"the model {_shown(model.get('class_name'))}'s config")
        if "input_layers" in config:
            return self._functional(model, config, given, depth)
        if model.get("class_name") == "Sequential":
            return self._sequential(model, config, given, depth)
        raise _Refused(f"{_named(model)} does not describe its layers' graph")

    def _sequential(
        self, model: dict[str, Any], config: dict[str, Any], given: _Shapes | None, depth: int
    ) -> _Shapes:
        layers = [_layer(entry) for entry in _list(config.get("layers"), "a Sequential model's layers")]
        if not layers:
            raise _Refused(f"{_named(model)} has no layers")
        if given is not None and len(given) != 1:
            raise _Refused(f"{_named(model)} takes one input, not {len(given)}")
        declared = _sequential_input(model, config, layers[0])
        x: Shape | None = _entry(model, None if declared is None else [declared], given)[0]
        if x is None and layers[0]["class_name"] not in MODEL_CLASSES:
            raise _Refused(f"{_named(model)} declares no input shape")
        for index, layer in enumerate(layers):
            if layer["class_name"] == "InputLayer":
                if index:
                    raise _Refused(f"{_named(model)} has an input layer after its first layer")
                self._activate(layer, x)
                continue
            outputs = self.call(layer, [x], depth)
            if len(outputs) != 1:
                raise _Refused(f"{_named(layer)} gives {len(outputs)} outputs inside a Sequential model")
            x = outputs[0]
        return [x]

    def _functional(
        self, model: dict[str, Any], config: dict[str, Any], given: _Shapes | None, depth: int
    ) -> _Shapes:
        layers: dict[str, dict[str, Any]] = {}
        for entry in _list(config.get("layers"), "a Functional model's layers"):
            layer = _layer(entry)
            name = layer.get("name", layer["config"].get("name"))
            if not isinstance(name, str) or name in layers:
                raise _Refused(f"{_named(model)} has two layers named {_shown(name)}, or one without a name")
            layers[name] = layer
        outputs: dict[tuple[str, int], _Shapes] = {}  # (layer, node index) -> the shapes that call gives
        calls: list[tuple[dict[str, Any], int, Any]] = []  # (layer, node index, node)
        for name, layer in layers.items():
            nodes = _list(layer.get("inbound_nodes", []), f"{_named(layer)}'s inbound nodes")
            if layer["class_name"] == "InputLayer":
                if nodes:
                    raise _Refused(f"{_named(layer)} is called on other tensors")
                outputs[name, 0] = [_input_layer_shape(layer)]
            elif not nodes:
                raise _Refused(f"{_named(layer)} is never called (Keras would still build it)")
            calls += [(layer, index, node) for index, node in enumerate(nodes)]
        if len(calls) > MAX_LAYERS:
            raise _Refused(f"{_named(model)} calls its layers over {MAX_LAYERS:,} times")
        inputs = _refs(config.get("input_layers"), "input layers")
        if any(layers.get(name, {}).get("class_name") != "InputLayer" for name, _, _ in inputs):
            raise _Refused(f"{_named(model)} takes inputs that are not input layers")
        declared = [outputs[name, 0][0] for name, _, _ in inputs]
        for shape, (name, _, _) in zip(_entry(model, declared, given), inputs, strict=True):
            self._activate(layers[name], shape)
        self._run_graph(model, calls, outputs, depth)
        # Keras numbers a nested Functional model's calls from 1 in output_layers (its node 0 is the one
        # that built it), but from 0 in the calls' own arguments (functional.py, get_config).
        results = [
            (name, at - 1 if layers.get(name, {}).get("class_name") == "Functional" else at, index)
            for name, at, index in _refs(config.get("output_layers"), "output layers")
        ]
        if any((name, at) not in outputs for name, at, _ in results):
            raise _Refused(f"{_named(model)} outputs a tensor that none of its layers gives")
        return [_tensor(outputs, ref) for ref in results]

    def _run_graph(
        self,
        model: dict[str, Any],
        calls: list[tuple[dict[str, Any], int, Any]],
        outputs: dict[tuple[str, int], _Shapes],
        depth: int,
    ) -> None:
        """Make every call once the tensors it takes exist (as Keras does), in the order they are listed."""
        tensors = [_node_tensors(layer, node) for layer, _, node in calls]
        waiting_for: list[set[tuple[str, int]]] = []
        waiters: dict[tuple[str, int], list[int]] = {}  # a call's output -> the calls that wait for it
        for number, (_, every) in enumerate(tensors):
            waiting_for.append({(name, at) for name, at, _ in every} - outputs.keys())
            for key in waiting_for[-1]:
                waiters.setdefault(key, []).append(number)
        ready = [number for number, keys in enumerate(waiting_for) if not keys]
        made = 0
        while ready:
            number = heapq.heappop(ready)
            layer, index, _ = calls[number]
            args = [_tensor(outputs, ref) for ref in tensors[number][0]]
            outputs[_name(layer), index] = self.call(layer, args, depth)
            made += 1
            for waiter in waiters.pop((_name(layer), index), []):
                waiting_for[waiter].discard((_name(layer), index))
                if not waiting_for[waiter]:
                    heapq.heappush(ready, waiter)
        if made < len(calls):
            stuck = next(layer for (layer, _, _), keys in zip(calls, waiting_for, strict=True) if keys)
            raise _Refused(f"{_named(stuck)} takes a tensor that no layer of {_named(model)} gives")

    def call(self, layer: dict[str, Any], inputs: _Shapes, depth: int) -> _Shapes:
        """The output shapes of ``layer`` called on ``inputs``; its variables count at its first call."""
        first = self._calls.get(id(layer))
        if first is not None:
            before, outputs, activations = first
            if inputs != before:
                raise _Refused(
                    f"{_named(layer)} is called on inputs of other sizes: {_shown(before)}, {_shown(inputs)}"
                )
            self._add_activations(layer, activations)
            return outputs
        counted = self.activations
        outputs = self._first_call(layer, inputs, depth)
        self._calls[id(layer)] = (inputs, outputs, self.activations - counted)
        return outputs

    def _first_call(self, layer: dict[str, Any], inputs: _Shapes, depth: int) -> _Shapes:
        cls = layer["class_name"]
        if cls in MODEL_CLASSES:
            return self.model(layer, inputs, depth + 1)
        infer = _LAYER_SIZES.get(cls)
        built = _built_for(layer)
        known = [shape for shape in inputs if shape is not None]
        if infer is None or len(known) < len(inputs):
            # An opted-in layer, or a layer after one: its output cannot be worked out, nor (without a
            # build_config to say it) its variables.
            self.exact = False
            if infer is not None and built is not None:
                self._allocate(layer, *_infer(layer, infer, built)[1:])
            else:
                _bounded(layer, built)
            return [None]
        if built is not None and built != known:
            raise _Refused(
                f"{_named(layer)} is built for inputs {_shown(built)} but the graph gives it {_shown(known)}"
            )
        output, weights, factors = _infer(layer, infer, known)
        self._allocate(layer, weights, factors)
        self._activate(layer, output)
        return [output]

    def _allocate(self, layer: dict[str, Any], weights: list[Shape], factors: list[Shape]) -> None:
        self.weights += weights
        self.factors += factors
        self.allocated += sum(map(math.prod, weights + factors))
        if self.allocated > MAX_WEIGHTS:
            raise _Refused(
                f"its config builds over {MAX_WEIGHTS:,} weights ({self.allocated:,} by {_named(layer)}), "
                "which Keras would allocate before reading the weights file"
            )

    def _activate(self, layer: dict[str, Any], output: Shape | None) -> None:
        if output is not None:
            self._add_activations(layer, math.prod(output), output)

    def _add_activations(self, layer: dict[str, Any], count: int, output: Shape | None = None) -> None:
        self.activations += count
        if self.activations > MAX_ACTIVATIONS:
            shown = f", whose output per image is {_clip('x'.join(map(str, output)))}" if output else ""
            raise _Refused(
                f"its layers output over {MAX_ACTIVATIONS:,} numbers per image "
                f"({self.activations:,} by {_named(layer)}{shown})"
            )


def _infer(layer: dict[str, Any], infer: _Infer, inputs: list[Shape]) -> _Sizes:
    try:
        return infer(layer["config"], inputs)
    except _Refused as e:
        raise _Refused(f"{_named(layer)} {e}") from None


def _bounded(layer: dict[str, Any], built: list[Shape] | None) -> None:
    """Bounds, number by number, for a layer whose sizes cannot be worked out.

    An opted-in layer (or a layer after one, without a ``build_config``) has no input shape known here,
    so its variables cannot be counted: instead every number under a size-deciding key of its config
    (``units``, ``filters``, ``kernel_size``, an Embedding's ``input_dim`` and ``output_dim``, a
    ``batch_shape``'s dimensions, ..., in the layer and any layer it wraps) is held to MAX_DIM, and their
    product in any one object to MAX_WEIGHTS: an Embedding's weights exactly, a Dense layer's up to its
    input's unknown width. The inputs its ``build_config`` has Keras build it for are held to
    MAX_ACTIVATIONS numbers per image. Opting a layer in trusts the file that far.
    """
    for shape in built or []:
        if math.prod(shape) > MAX_ACTIVATIONS:
            raise _Refused(
                f"{_named(layer)} is built for an input of over {MAX_ACTIVATIONS:,} numbers per image"
            )
    stack: list[Any] = [layer["config"]]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack += node
        elif isinstance(node, dict):
            stack += node.values()
            product = 1
            for key in sorted(_SIZE_KEYS & node.keys()):
                for n in _numbers(node[key]):
                    if not n <= MAX_DIM:  # NaN too
                        raise _Refused(f"{_named(layer)} has {key} {_shown(n)}, over {MAX_DIM:,}")
                    product *= max(1, int(n))
                    if product > MAX_WEIGHTS:
                        raise _Refused(f"{_named(layer)} has sizes whose product is over {MAX_WEIGHTS:,}")


def _numbers(value: Any) -> Iterator[float]:
    """The numbers in a value and the lists it nests."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack += item
        elif isinstance(item, int | float) and not isinstance(item, bool):
            yield item


# The graph


def _layer(entry: Any) -> dict[str, Any]:
    layer = _dict(entry, "a layer")
    if not isinstance(layer.get("class_name"), str):
        raise _Refused(f"a layer names no class ({_shown(layer)})")
    _dict(layer.get("config"), f"{_named(layer)}'s config")
    return layer


def _name(layer: dict[str, Any]) -> str:
    return str(layer.get("name", layer["config"].get("name")))


def _named(layer: dict[str, Any]) -> str:
    """How a message names a layer: the layer 'name' (Class), or the model 'name' (Functional)."""
    config, cls = layer.get("config"), layer.get("class_name")
    name = layer.get("name", config.get("name") if isinstance(config, dict) else None)
    kind = "model" if isinstance(cls, str) and cls in MODEL_CLASSES else "layer"
    return f"the {kind} {_shown(name)} ({_clip(str(cls))})"


def _entry(model: dict[str, Any], declared: _Shapes | None, given: _Shapes | None) -> _Shapes:
    """A model's input shapes: what it declares, which must be what it is called on (if known)."""
    if given is None:
        if declared is None:
            raise _Refused(f"{_named(model)} declares no input shape")
        return declared
    if declared is None:
        return given
    if len(given) != len(declared) or any(g not in (None, d) for g, d in zip(given, declared, strict=False)):
        raise _Refused(f"{_named(model)} takes inputs {_shown(declared)} but is called on {_shown(given)}")
    return declared


def _sequential_input(model: dict[str, Any], config: dict[str, Any], first: dict[str, Any]) -> Shape | None:
    """The input shape Keras builds a Sequential model for, as it looks for one (None: none declared)."""
    if first["class_name"] == "InputLayer":
        return _input_layer_shape(first)
    own = first["config"]
    if own.get("batch_input_shape") is not None:  # tf.keras 2's first layer
        return _batch_shape(own["batch_input_shape"], f"{_named(first)}'s batch_input_shape")
    if own.get("input_shape") is not None:
        return _dims(own["input_shape"], f"{_named(first)}'s input_shape")
    if own.get("input_dim") is not None:
        return _dims([own["input_dim"]], f"{_named(first)}'s input_dim")
    build_config = model.get("build_config")
    built = build_config.get("input_shape") if isinstance(build_config, dict) else None
    shape = config.get("build_input_shape") or built  # Keras builds it for either, in this order
    return None if shape is None else _batch_shape(shape, f"{_named(model)}'s input shape")


def _input_layer_shape(layer: dict[str, Any]) -> Shape:
    config = layer["config"]
    if config.get("input_tensor") is not None:
        raise _Refused(f"{_named(layer)} is given a tensor (Keras saves none)")
    for key in ("batch_shape", "batch_input_shape"):
        if config.get(key) is not None:
            return _batch_shape(config[key], f"{_named(layer)}'s {key}")
    for key in ("shape", "input_shape"):
        if config.get(key) is not None:
            return _dims(config[key], f"{_named(layer)}'s {key}")
    raise _Refused(f"{_named(layer)} declares no shape")


def _built_for(layer: dict[str, Any]) -> list[Shape] | None:
    """The input shapes a layer's ``build_config`` has Keras build it for first (None: it names none)."""
    if layer.get("build_config") is None:
        return None
    what = f"{_named(layer)}'s build config"
    build = _dict(layer["build_config"], what)
    if build.get("input_shape") is not None:
        shape = build["input_shape"]
        several = isinstance(shape, list) and shape and all(isinstance(s, list) for s in shape)
        return [_batch_shape(s, what) for s in (shape if several else [shape])]
    if build.get("shapes_dict") is not None:  # a layer built from several named inputs (attention)
        return [_batch_shape(s, what) for s in _dict(build["shapes_dict"], what).values() if s is not None]
    return None


def _batch_shape(value: Any, what: str) -> Shape:
    """One image's shape from a shape with its batch dimension (null, or a number, in Keras' files)."""
    shape = _list(value, what)
    if not shape or (shape[0] is not None and not _is_count(shape[0])):
        raise _Refused(f"{what} is {_shown(value)}, not a shape with the batch's dimension first")
    return _dims(shape[1:], what)


def _dims(value: Any, what: str) -> Shape:
    dims = _list(value, what)
    if not 1 <= len(dims) <= MAX_RANK or not all(_is_count(n) for n in dims):
        raise _Refused(
            f"{what} is {_shown(value)}: one to {MAX_RANK} sizes, each a fixed positive whole number"
        )
    return tuple(dims)


def _refs(value: Any, what: str) -> list[_Ref]:
    """``input_layers`` or ``output_layers``: one ``[name, node, tensor]`` or a list (or dict) of them."""
    if isinstance(value, list) and value and isinstance(value[0], str):
        value = [value]
    items = list(value.values()) if isinstance(value, dict) else _list(value, f"the model's {what}")
    if not items:
        raise _Refused(f"a model has no {what}")
    return [_ref(item) for item in items]


def _ref(value: Any) -> _Ref:
    if not (
        isinstance(value, list)
        and len(value) >= 3
        and isinstance(value[0], str)
        and all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in value[1:3])
    ):
        raise _Refused(f"a tensor is named as {_shown(value)}, not [layer, node, tensor]")
    return value[0], value[1], value[2]


def _node_tensors(layer: dict[str, Any], node: Any) -> tuple[list[_Ref], list[_Ref]]:
    """(the tensors a call takes positionally, every tensor it takes) from one of ``inbound_nodes``."""
    if isinstance(node, list):  # legacy: [[layer, node, tensor, kwargs], ...]
        refs = [_ref(item) for item in node]
        return refs, refs
    node = _dict(node, f"{_named(layer)}'s inbound node")
    positional = [_history(layer, t) for t in _keras_tensors(node.get("args"))]
    return positional, positional + [_history(layer, t) for t in _keras_tensors(node.get("kwargs"))]


def _keras_tensors(value: Any) -> list[dict[str, Any]]:
    found, stack = [], [value]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack += reversed(node)
        elif isinstance(node, dict):
            if node.get("class_name") == "__keras_tensor__":
                found.append(node)
            else:
                stack += reversed(list(node.values()))
    return found


def _history(layer: dict[str, Any], tensor: dict[str, Any]) -> _Ref:
    config = tensor.get("config")
    history = config.get("keras_history") if isinstance(config, dict) else None
    if history is None:
        # Keras would build the layer for the shape written beside the tensor, whatever it is.
        raise _Refused(f"{_named(layer)} is called on a tensor that comes from no layer")
    return _ref(history)


def _tensor(outputs: dict[tuple[str, int], _Shapes], ref: _Ref) -> Shape | None:
    name, node, index = ref
    if index >= len(outputs[name, node]):
        raise _Refused(f"a tensor is named as {list(ref)}, but that call gives {len(outputs[name, node])}")
    return outputs[name, node][index]


def _mismatch(built: list[Shape], stored: list[Shape]) -> str:
    lacking, unused = Counter(built) - Counter(stored), Counter(stored) - Counter(built)
    details = [f"the file lacks {_some(lacking)}"] if lacking else []
    details += [f"the config has no place for {_some(unused)}"] if unused else []
    return (
        f"its config builds {sum(map(math.prod, built)):,} weights in {len(built)} arrays, but its weights "
        f"file holds {sum(map(math.prod, stored)):,} in {len(stored)} ({'; '.join(details)})"
    )


def _some(shapes: Counter[Shape]) -> str:
    listed = sorted(shapes.elements())
    more = f" and {len(listed) - 3} more" if len(listed) > 3 else ""
    return ", ".join(_clip(str(shape)) for shape in listed[:3]) + more


# The layers of APP_LAYERS (InputLayer apart): their outputs and variables, as their ``build`` makes them.


def _one(inputs: list[Shape], rank: int | None = None) -> Shape:
    if len(inputs) != 1:
        raise _Refused(f"takes one input, not {len(inputs)}")
    if rank is not None and len(inputs[0]) != rank:
        raise _Refused(f"takes inputs of {rank} dimensions per image, not {_shown(inputs[0])}")
    return inputs[0]


def _same_shape(config: dict[str, Any], inputs: list[Shape]) -> _Sizes:
    return _one(inputs), [], []


def _rescaling(config: dict[str, Any], inputs: list[Shape]) -> _Sizes:
    x = _one(inputs)
    for key in ("scale", "offset"):
        value = config.get(key, 0)
        row = value if isinstance(value, list) else [value]
        if len(row) not in (1, x[-1]) or not all(isinstance(n, int | float) for n in row):
            raise _Refused(f"has {key} {_shown(value)}: a number, or one per channel")
    return x, [], []


def _dense(config: dict[str, Any], inputs: list[Shape]) -> _Sizes:
    x = _one(inputs)
    units = _count(config, "units")
    return (*x[:-1], units), [(x[-1], units), *_bias(config, units)], _lora(config, (x[-1],), units)


def _conv2d(config: dict[str, Any], inputs: list[Shape]) -> _Sizes:
    first = _channels_first(config)
    (height, width), channels = _spatial(_one(inputs, 3), first)
    filters, groups = _count(config, "filters"), _count(config, "groups", 1)
    if channels % groups or filters % groups:
        raise _Refused(f"has {groups} groups, which must divide its {channels} inputs and {filters} filters")
    kernel = (*_counts(config, "kernel_size"), channels // groups, filters)
    strides, dilation = _counts(config, "strides", (1, 1)), _counts(config, "dilation_rate", (1, 1))
    size = _window(config, (height, width), kernel[:2], strides, dilation)
    output = (filters, *size) if first else (*size, filters)
    return output, [kernel, *_bias(config, filters)], _lora(config, kernel[:-1], filters)


def _max_pooling2d(config: dict[str, Any], inputs: list[Shape]) -> _Sizes:
    first = _channels_first(config)
    (height, width), channels = _spatial(_one(inputs, 3), first)
    pool = _counts(config, "pool_size", (2, 2))
    size = _window(config, (height, width), pool, _counts(config, "strides", pool), (1, 1))
    return ((channels, *size) if first else (*size, channels)), [], []


def _batch_normalization(config: dict[str, Any], inputs: list[Shape]) -> _Sizes:
    x = _one(inputs)
    axis = config.get("axis", -1)
    if isinstance(axis, list) and len(axis) == 1:  # tf.keras 2 wrote a list
        axis = axis[0]
    if not isinstance(axis, int) or isinstance(axis, bool) or axis == 0 or not -len(x) <= axis <= len(x):
        raise _Refused(f"has axis {_shown(axis)}, not an axis of its inputs {_shown(x)} (nor the batch's)")
    features = (x[axis - 1] if axis > 0 else x[axis],)
    # moving mean and variance; beta (center), gamma (scale); three more for batch renormalization
    count = (
        2 + _flag(config, "center", True) + _flag(config, "scale", True) + 3 * _flag(config, "renorm", False)
    )
    return x, [features] * count, []


def _global_max_pooling2d(config: dict[str, Any], inputs: list[Shape]) -> _Sizes:
    first = _channels_first(config)
    _, channels = _spatial(_one(inputs, 3), first)
    if not _flag(config, "keepdims", False):
        return (channels,), [], []
    return ((channels, 1, 1) if first else (1, 1, channels)), [], []


def _flatten(config: dict[str, Any], inputs: list[Shape]) -> _Sizes:
    return (math.prod(_one(inputs)),), [], []


def _permute(config: dict[str, Any], inputs: list[Shape]) -> _Sizes:
    x = _one(inputs)
    dims = config.get("dims")
    order = list(range(1, len(x) + 1))
    if not (isinstance(dims, list) and all(type(d) is int for d in dims) and sorted(dims) == order):
        raise _Refused(f"has dims {_shown(dims)}, not an order of its inputs' {len(x)} dimensions")
    return tuple(x[d - 1] for d in dims), [], []


def _average(config: dict[str, Any], inputs: list[Shape]) -> _Sizes:
    if not inputs or len(set(inputs)) != 1:
        raise _Refused(f"averages inputs of different shapes ({_shown(inputs)})")
    return inputs[0], [], []


_LAYER_SIZES: dict[str, _Infer] = {
    "Rescaling": _rescaling,
    "Conv2D": _conv2d,
    "MaxPooling2D": _max_pooling2d,
    "BatchNormalization": _batch_normalization,
    "Activation": _same_shape,
    "GlobalMaxPooling2D": _global_max_pooling2d,
    "Flatten": _flatten,
    "Dense": _dense,
    "Permute": _permute,
    "Average": _average,
}


def _spatial(x: Shape, channels_first: bool) -> tuple[Shape, int]:
    return (x[1:], x[0]) if channels_first else (x[:2], x[2])


def _window(config: dict[str, Any], size: Shape, window: Shape, strides: Shape, dilation: Shape) -> Shape:
    """The output's height and width after a sliding window (a convolution's or a pooling's)."""
    padding = config.get("padding", "valid")
    padding = padding.lower() if isinstance(padding, str) else padding
    if padding not in ("valid", "same"):
        raise _Refused(f"has padding {_shown(padding)}, not 'valid' or 'same'")
    output = []
    for n, k, s, d in zip(size, window, strides, dilation, strict=True):
        span = d * (k - 1) + 1
        m = -(-n // s) if padding == "same" else (n - span) // s + 1
        if m < 1:
            raise _Refused(f"slides a window of {span} over {n}: its output would be empty")
        output.append(m)
    return tuple(output)


def _count(config: dict[str, Any], key: str, default: int | None = None) -> int:
    value = config.get(key, default)
    if not isinstance(value, int) or not _is_count(value):
        raise _Refused(f"has {key} {_shown(value)}, not a positive whole number")
    return value


def _counts(config: dict[str, Any], key: str, default: Shape | None = None) -> Shape:
    """A pair such as ``kernel_size``: one number for both, or two."""
    value = config.get(key)
    if value is None and default is not None:
        return default
    pair = [value, value] if _is_count(value) else value
    if not isinstance(pair, list) or len(pair) != 2 or not all(_is_count(n) for n in pair):
        raise _Refused(f"has {key} {_shown(value)}, not two positive whole numbers")
    return tuple(pair)


def _bias(config: dict[str, Any], units: int) -> list[Shape]:
    return [(units,)] if _flag(config, "use_bias", True) else []


def _lora(config: dict[str, Any], inputs: Shape, outputs: int) -> list[Shape]:
    """The two factors of a LoRA rank that Keras adds to a kernel of shape ``(*inputs, outputs)``."""
    if not config.get("lora_rank"):
        return []
    rank = _count(config, "lora_rank")
    return [(*inputs, rank), (rank, outputs)]


def _flag(config: dict[str, Any], key: str, default: bool) -> bool:
    value = config.get(key, default)
    if not isinstance(value, bool):
        raise _Refused(f"has {key} {_shown(value)}, not true or false")
    return value


def _channels_first(config: dict[str, Any]) -> bool:
    value = config.get("data_format")
    if value not in (None, "channels_last", "channels_first"):
        raise _Refused(f"has data_format {_shown(value)}")
    return value == "channels_first"


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _dict(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _Refused(f"{what} is {_shown(value)}, not a mapping")
    return value


def _list(value: Any, what: str) -> list[Any]:
    if not isinstance(value, list):
        raise _Refused(f"{what} is {_shown(value)}, not a list")
    return value


def _shown(value: Any) -> str:
    return _clip(repr(value))


def _clip(text: str) -> str:
    """Text short enough for a message (a shape may hold numbers of thousands of digits)."""
    return text if len(text) <= 60 else text[:57] + "..."


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
    text = _one_line(error)
    if "safe_mode" in text or "Lambda" in text:
        return "it asks to run code (e.g. a Lambda layer), which is refused"
    return text[:300] or type(error).__name__


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())


def _size(n: int) -> str:
    for unit, scale in (
        ("PiB", 1 << 50),
        ("TiB", 1 << 40),
        ("GiB", 1 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
    ):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"
