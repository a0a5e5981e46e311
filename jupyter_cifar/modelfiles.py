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
  safe mode off (CVE-2025-9906), no registered custom object. And every layer must be one whose sizes
  are worked out here (:data:`~jupyter_cifar.layersizes.SIZED_LAYERS`: the presets' layers, the common
  Sequential idioms' and ``keras.applications``' image families'), unless the user allows more with
  ``JUPYTER_CIFAR_EXTRA_LAYERS`` or the ``extra_layers`` argument: code-running layers stay refused
  even then.
- The sizes. Keras builds every layer's variables from the config before it reads one weight, so the
  shapes are worked out first, without Keras (:mod:`jupyter_cifar.modelsizes`): a model that would
  allocate too much, or build other variables than its weights file holds, is refused.

Loading then goes through Keras' own ``safe_mode`` and without the compile config (a loaded model is
recompiled by whoever trains it), as a second line.
"""

from __future__ import annotations

import builtins
import contextlib
import io
import json
import math
import os
import shutil
import stat
import struct
import tempfile
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, NamedTuple

from .errors import BadParameter, ModelFileError
from .layersizes import SIZED_LAYERS
from .modelsizes import MAX_LAYERS, MAX_WEIGHTS, MODEL_CLASSES, Shape, check_sizes

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
#: Layers that run code from the file or another runtime's model: refused even when opted in.
CODE_LAYERS = frozenset({"Lambda", "TFSMLayer", "TorchModuleWrapper", "JaxLayer", "FlaxLayer"})
#: Comma-separated Keras layer class names a user allows on top of :data:`SIZED_LAYERS`, or ``keras``.
EXTRA_LAYERS_ENV = "JUPYTER_CIFAR_EXTRA_LAYERS"
ANY_KERAS_LAYER = "keras"

# Bounds. A CIFAR model is small: the accurate preset holds 2.0 M weights (an 8 MB file; about twice
# that with the optimizer's state after training) and a 45 KB config. These leave room for far bigger
# networks and still refuse what would exhaust a kernel's memory before Keras could notice anything.
MAX_CONFIG_BYTES = 16 << 20  # config.json, metadata.json, an .h5's model_config
MAX_UNPACKED_BYTES = 2 << 30  # a .keras file's entries together, or an .h5 file
MAX_EXPANSION = 100  # declared / stored bytes of any zip entry or HDF5 dataset larger than
EXPANSION_FLOOR = 1 << 20  # 1 MiB (Keras writes both uncompressed, 1:1)
MAX_ZIP_ENTRIES = 1000
MAX_ZIP_DIRECTORY_BYTES = 1 << 20  # read from the zip's end record before the directory is parsed
MAX_HDF5_LINKS = 20_000  # groups, datasets and links in one HDF5 file (the accurate preset: 110)

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
# This package's own registered objects that a training checkpoint's compile config may name, exactly as
# Keras writes them (module, class, registered name): their code is ours, installed, never the file's;
# their configs hold numbers. The optimizer of the presets that train their kernels with Muon.
_OWN_OBJECTS = frozenset({("jupyter_cifar.muon", "KernelMuon", "jupyter_cifar>KernelMuon")})
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
