"""The containers of model files, checked before anything in them is parsed: a ``.keras`` zip and the
HDF5 files (a legacy ``.h5``, a ``.keras``'s ``model.weights.h5``).

A zip is bounded before its directory is parsed (entries, directory size), then per entry (unpacked size,
expansion ratio: zip bombs; names that leave a folder; duplicates; anything but Keras' own entries). An
HDF5 file must hold plain groups and datasets stored in that file: no external storage or virtual
datasets (they read other local files), no external or soft links, and no dataset declaring far more than
it stores or more weights than a CIFAR model has (shape bombs). What passes is read into
:class:`ModelContents` for :mod:`jupyter_cifar.engine.modelfiles` to check the config. No Keras import here.
"""

from __future__ import annotations

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
from collections.abc import Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, NamedTuple

from ..errors import ModelFileError
from .modelsizes import MAX_WEIGHTS, Shape

if TYPE_CHECKING:
    import h5py

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
        raise ModelFileError(f"{path}: cannot be read as a model file ({one_line(e)})") from None
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
            return f"cannot be read as HDF5 ({one_line(e)})"
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


def one_line(error: BaseException) -> str:
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
