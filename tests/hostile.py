"""Hostile model files, written from scratch here (json, zipfile, struct, h5py): one per published technique.

No exploit is downloaded: each file is built from the technique's description. A payload that would run
code targets a *marker* file it would create; a payload that would read a local file points at a marker
file that the builder writes (the tests set its access time back, so that any read of it shows).
:data:`CORPUS` lists them for the tests (``tests/test_hostile_models.py``) and for the README's table.

The benign model every file starts from is a Sequential of InputLayer (32, 32, 3), GlobalMaxPooling2D and
Dense(10), written the way Keras 3 writes it, so a hostile file differs from a loadable one only by its
payload (:func:`write_benign` makes the loadable one, and the tests load it). :class:`PeakRss` measures
the memory a process takes while it refuses (or, unchecked, loads) an allocation bomb.
"""

from __future__ import annotations

import base64
import io
import json
import marshal
import pickle
import re
import struct
import types
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import psutil

KERNEL_SHAPE = (3, 10)  # the Dense layer's kernel: 3 channels in, 10 classes out
KERNEL_BYTES = 3 * 10 * 4


# -- configs -------------------------------------------------------------------------------------------


def obj(module: str | None, class_name: str, config: Any, registered_name: Any = None) -> dict[str, Any]:
    """A serialized Keras object as Keras 3 writes it (``module`` None: the legacy way, no module)."""
    out: dict[str, Any] = {"class_name": class_name, "config": config}
    if module is not None:
        out = {"module": module, **out, "registered_name": registered_name}
    return out


def dense(module: str | None = "keras.layers", **overrides: Any) -> dict[str, Any]:
    config = {
        "name": "dense",
        "trainable": True,
        "dtype": "float32",
        "units": 10,
        "activation": "linear",
        "use_bias": True,
        "kernel_initializer": obj("keras.initializers", "GlorotUniform", {"seed": None}),
        "bias_initializer": obj("keras.initializers", "Zeros", {}),
        "kernel_regularizer": None,
        **overrides,
    }
    return obj(module, "Dense", config)


def sequential(
    *layers: dict[str, Any], module: str | None = "keras", batch_shape: list[Any] | None = None
) -> dict[str, Any]:
    """A Sequential model config: an InputLayer (32, 32, 3, or ``batch_shape``), then ``layers``."""
    config = {"batch_shape": batch_shape or [None, 32, 32, 3], "name": "image"}
    image = obj(module and "keras.layers", "InputLayer", config)
    return obj(module, "Sequential", {"name": "hostile", "trainable": True, "layers": [image, *layers]})


def flatten(module: str | None = "keras.layers") -> dict[str, Any]:
    return obj(module, "Flatten", {"name": "flat", "trainable": True, "dtype": "float32"})


def conv2d(**overrides: Any) -> dict[str, Any]:
    config = {
        "name": "conv",
        "trainable": True,
        "dtype": "float32",
        "filters": 8,
        "kernel_size": [3, 3],
        "strides": [1, 1],
        "padding": "valid",
        "data_format": "channels_last",
        "dilation_rate": [1, 1],
        "groups": 1,
        "activation": "relu",
        "use_bias": True,
        **overrides,
    }
    return obj("keras.layers", "Conv2D", config)


def keras_tensor(shape: list[Any], history: list[Any] | None) -> dict[str, Any]:
    """A tensor in a Keras 3 Functional config: its shape, and the layer call it comes from."""
    return {
        "class_name": "__keras_tensor__",
        "config": {"shape": shape, "dtype": "float32", "keras_history": history},
    }


def called(layer: dict[str, Any], *args: dict[str, Any]) -> dict[str, Any]:
    """A layer in a Functional config, called once on ``args``."""
    nodes = [{"args": list(args), "kwargs": {}}] if args else []
    return {**layer, "name": layer["config"]["name"], "inbound_nodes": nodes}


def benign_layers(module: str | None = "keras.layers", **dense_overrides: Any) -> list[dict[str, Any]]:
    pool = obj(module, "GlobalMaxPooling2D", {"name": "pool", "trainable": True, "dtype": "float32"})
    return [pool, dense(module, **dense_overrides)]


def lambda_layer(marker: Path, module: str | None = "keras.layers") -> dict[str, Any]:
    """A Lambda layer whose function is marshalled bytecode that creates ``marker`` when called."""
    config = {"name": "lam", "trainable": True, "function": lambda_function(marker), "arguments": {}}
    return obj(module, "Lambda", config)


def lambda_function(marker: Path) -> dict[str, Any]:
    """A Python lambda as Keras serializes one: marshalled bytecode, here creating ``marker``."""
    return {
        "class_name": "__lambda__",
        "config": {"code": marker_code(marker), "defaults": None, "closure": None},
    }


def marker_code(marker: Path) -> str:
    """Base64 of the marshalled bytecode of ``lambda x: <create marker>, x``, as Keras stores a lambda."""
    source = f"lambda x: (open({str(marker)!r}, 'w').close(), x)[1]"
    code = next(c for c in compile(source, "<hostile>", "eval").co_consts if isinstance(c, types.CodeType))
    return base64.b64encode(marshal.dumps(code)).decode()


class OpenOnUnpickle:
    """Pickles to a call of ``open(path, "w")``: unpickling it creates the file (what a pickle can run)."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (self.path, "w"))


def pickle_payload(marker: Path) -> str:
    return base64.b64encode(pickle.dumps(OpenOnUnpickle(marker))).decode()


# -- HDF5 ----------------------------------------------------------------------------------------------

Customize = Callable[[h5py.File, str], None]  # (the open file, the kernel dataset's path in it)


def weights_h5(customize: Customize | None = None) -> bytes:
    """A .keras file's model.weights.h5 for the benign model; ``customize`` then changes its kernel."""
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as f:
        f.create_group("vars").attrs["name"] = "hostile"
        f.create_group("layers/pool/vars").attrs["name"] = "pool"
        dense_vars = f.create_group("layers/dense/vars")
        dense_vars.attrs["name"] = "dense"
        dense_vars["0"] = np.full(KERNEL_SHAPE, 0.5, dtype="float32")
        dense_vars["1"] = np.zeros(10, dtype="float32")
        if customize:
            customize(f, "layers/dense/vars/0")
    return buffer.getvalue()


def write_legacy_h5(path: Path, config: dict[str, Any], customize: Customize | None = None) -> None:
    """A legacy .h5 model file as Keras writes one: the config in an attribute, weights per layer."""
    with h5py.File(path, "w") as f:
        f.attrs["keras_version"] = "3.15.1"
        f.attrs["backend"] = "tensorflow"
        f.attrs["model_config"] = json.dumps(config)
        weights = f.create_group("model_weights")
        names = [layer["config"]["name"] for layer in config["config"]["layers"][1:]]
        weights.attrs["layer_names"] = [name.encode() for name in names]
        for name in [*names, "top_level_model_weights"]:
            weights.create_group(name).attrs["weight_names"] = np.array([], dtype="S1")
        if "dense" in names:
            weights["dense"].attrs["weight_names"] = [b"hostile/dense/kernel", b"hostile/dense/bias"]
            weights["dense/hostile/dense/kernel"] = np.full(KERNEL_SHAPE, 0.5, dtype="float32")
            weights["dense/hostile/dense/bias"] = np.zeros(10, dtype="float32")
            if customize:
                customize(f, "model_weights/dense/hostile/dense/kernel")


def write_secret_h5(path: Path) -> None:
    """The local HDF5 file a virtual dataset or an external link would read: a kernel-shaped secret."""
    with h5py.File(path, "w") as f:
        f["data"] = np.arange(30, dtype="float32").reshape(KERNEL_SHAPE)


def write_secret_bytes(path: Path) -> None:
    """The local file an external dataset would read (as the kernel's 120 bytes)."""
    path.write_bytes(b"secret! " * (KERNEL_BYTES // 8))


def external_storage(secret: Path | str, size: int = KERNEL_BYTES) -> Customize:
    def change(f: h5py.File, kernel: str) -> None:
        del f[kernel]
        f.create_dataset(kernel, shape=KERNEL_SHAPE, dtype="float32", external=[(str(secret), 0, size)])

    return change


def virtual_dataset(secret: Path) -> Customize:
    def change(f: h5py.File, kernel: str) -> None:
        del f[kernel]
        layout = h5py.VirtualLayout(shape=KERNEL_SHAPE, dtype="float32")
        layout[:] = h5py.VirtualSource(str(secret), "data", shape=KERNEL_SHAPE)
        f.create_virtual_dataset(kernel, layout)

    return change


def external_link(secret: Path) -> Customize:
    def change(f: h5py.File, kernel: str) -> None:
        del f[kernel]
        f[kernel] = h5py.ExternalLink(str(secret), "/data")

    return change


def soft_link(f: h5py.File, kernel: str) -> None:
    del f[kernel]
    f[kernel] = h5py.SoftLink("/" + kernel.rsplit("/", 1)[0] + "/../bias")


def shape_bomb(f: h5py.File, kernel: str) -> None:
    """A dataset declaring 50 M x 50 M floats (9 PB) that stores nothing: chunked, compressed, unwritten."""
    del f[kernel]
    f.create_dataset(
        kernel, shape=(50_000_000, 50_000_000), dtype="float32", chunks=(1, 1024), compression="gzip"
    )


# -- .keras zips ---------------------------------------------------------------------------------------


def write_keras(
    path: Path, config: Any, weights: bytes | None = None, extra: dict[str, bytes] | None = None
) -> None:
    """A .keras zip as Keras writes one (entries stored, not compressed), plus ``extra`` entries."""
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("metadata.json", json.dumps({"keras_version": "3.15.1"}))
        z.writestr("config.json", json.dumps(config))
        z.writestr("model.weights.h5", weights if weights is not None else weights_h5())
        for name, data in (extra or {}).items():
            z.writestr(name, data)


@dataclass(frozen=True)
class RawEntry:
    """A zip entry written byte by byte: ``data`` as stored, sizes and CRC as declared (they may lie)."""

    name: str
    data: bytes = b""
    method: int = zipfile.ZIP_STORED
    size: int | None = None  # declared unpacked size (default: len(data))
    compressed: int | None = None  # declared stored size (default: len(data))
    crc: int = 0
    mode: int = 0o100644  # a regular file (0o120777: a symbolic link)


def write_raw_zip(path: Path, entries: list[RawEntry]) -> None:
    """Write a zip by hand: zipfile cannot store precompressed data or declare sizes that lie."""
    directory = []
    with open(path, "wb") as f:
        for e in entries:
            offset, name = f.tell(), e.name.encode()
            size = len(e.data) if e.size is None else e.size
            stored = len(e.data) if e.compressed is None else e.compressed
            sizes = (e.method, 0, 0, e.crc, stored, size, len(name))
            f.write(struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, 0, *sizes, 0) + name + e.data)
            header = struct.pack(
                "<4s6H3L5H2L", b"PK\x01\x02", 0x0314, 20, 0, *sizes, 0, 0, 0, 0, e.mode << 16, offset
            )
            directory.append(header + name)
        start, table = f.tell(), b"".join(directory)
        f.write(table)
        f.write(
            struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, len(entries), len(entries), len(table), start, 0)
        )


def deflate_bomb(byte: bytes, size: int) -> bytes:
    """A raw deflate stream that inflates to ``size`` copies of ``byte`` (``size``: whole MiB).

    Built in milliseconds: after a full flush the compressor starts afresh, so one compressed MiB can be
    repeated. The CRC is left 0 in the zip: a reader inflates everything before it can notice.
    """
    chunk = byte * (1 << 20)
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = compressor.compress(chunk) + compressor.flush(zlib.Z_FULL_FLUSH)
    return block * (size >> 20) + compressor.flush(zlib.Z_FINISH)


def keras_entries(config: Any) -> list[RawEntry]:
    return [
        RawEntry("metadata.json", b'{"keras_version": "3.15.1"}'),
        RawEntry("config.json", json.dumps(config).encode()),
        RawEntry("model.weights.h5", weights_h5()),
    ]


# -- the corpus ----------------------------------------------------------------------------------------


def write_benign(path: Path, marker: Path | None = None) -> None:
    """The loadable model every hostile file starts from (.keras, or legacy .h5 by the suffix)."""
    if path.suffix == ".h5":
        write_legacy_h5(path, sequential(*benign_layers(None), module=None))
    else:
        write_keras(path, sequential(*benign_layers()))


def _config_file(*layers: dict[str, Any]) -> Callable[[Path, Path], None]:
    return lambda path, marker: write_keras(path, sequential(*layers))


def _in_dense(**overrides: Any) -> Callable[[Path, Path], None]:
    return lambda path, marker: write_keras(path, sequential(*benign_layers(**overrides)))


def _lambda_keras(path: Path, marker: Path) -> None:
    write_keras(path, sequential(lambda_layer(marker)), weights_h5())


def _lambda_h5(path: Path, marker: Path) -> None:
    write_legacy_h5(path, sequential(lambda_layer(marker, module=None), module=None))


def _nested_lambda(path: Path, marker: Path) -> None:
    write_keras(path, sequential(*benign_layers(activation=lambda_function(marker))))


def _get_file(path: Path, marker: Path) -> None:
    call = {
        "fname": marker.name,
        "origin": "file:///etc/hostname",
        "cache_dir": str(marker.parent),
        "cache_subdir": ".",
    }
    write_keras(path, sequential(*benign_layers(kernel_initializer=obj("keras.utils", "get_file", call))))


def _popen(path: Path, marker: Path) -> None:
    popen = obj("subprocess", "Popen", {"args": ["touch", str(marker)]})
    write_keras(path, sequential(*benign_layers(kernel_regularizer=popen)))


def _torch_wrapper(path: Path, marker: Path) -> None:
    write_keras(
        path,
        sequential(
            obj("keras.layers", "TorchModuleWrapper", {"name": "torch", "module": pickle_payload(marker)})
        ),
    )


def _tfsm(path: Path, marker: Path) -> None:
    config = {"name": "saved", "filepath": str(marker), "call_endpoint": "serve"}
    write_keras(path, sequential(obj("keras.layers", "TFSMLayer", config)))


def _jax(path: Path, marker: Path) -> None:
    call_fn = obj("subprocess", "function", "getoutput", "function")
    write_keras(
        path,
        sequential(
            obj("keras.layers", "JaxLayer", {"name": "jax", "call_fn": call_fn, "params": str(marker)})
        ),
    )


def _weights(change: Callable[[Path], Customize], secret: Callable[[Path], None] | None = None):
    """A .keras (or, by the suffix, legacy .h5) file whose kernel ``change(marker)`` alters."""

    def build(path: Path, marker: Path) -> None:
        if secret:
            secret(marker)
        if path.suffix == ".h5":
            write_legacy_h5(path, sequential(*benign_layers(None), module=None), change(marker))
        else:
            write_keras(path, sequential(*benign_layers()), weights_h5(change(marker)))

    return build


def _zip_bomb(entry: str, byte: bytes, size: int) -> Callable[[Path, Path], None]:
    def build(path: Path, marker: Path) -> None:
        entries = [e for e in keras_entries(sequential(*benign_layers())) if e.name != entry]
        write_raw_zip(path, [*entries, RawEntry(entry, deflate_bomb(byte, size), zipfile.ZIP_DEFLATED, size)])

    return build


def _huge_declared(path: Path, marker: Path) -> None:
    entries = keras_entries(sequential(*benign_layers()))
    # Stored entries (1:1) that each declare 3.75 GiB while the file holds a few bytes of each.
    write_raw_zip(path, [RawEntry(e.name, e.data, size=0xF000_0000, compressed=0xF000_0000) for e in entries])


def _many_entries(path: Path, marker: Path) -> None:
    entries = keras_entries(sequential(*benign_layers()))
    write_raw_zip(path, entries + [RawEntry(f"assets/{i}") for i in range(50_000)])


def write_with_entry(path: Path, name: str) -> None:
    """The benign .keras file plus an entry named ``name`` (a name that leaves the folder, say)."""
    write_raw_zip(path, [*keras_entries(sequential(*benign_layers())), RawEntry(name, b"overwritten")])


def _duplicate_config(path: Path, marker: Path) -> None:
    entries = keras_entries(sequential(*benign_layers()))
    second = RawEntry("config.json", json.dumps(sequential(lambda_layer(marker))).encode())
    write_raw_zip(path, [*entries, second])  # zipfile (and Keras) read the last one


def _symlink(path: Path, marker: Path) -> None:
    link = RawEntry("assets/secret", str(marker).encode(), mode=0o120777)
    write_raw_zip(path, [*keras_entries(sequential(*benign_layers())), link])


def _allocation_bomb(config: dict[str, Any]) -> Callable[[Path, Path], None]:
    """The benign model's weights under a ``config`` that makes Keras allocate far more while it builds."""

    def build(path: Path, marker: Path) -> None:
        if path.suffix == ".h5":
            write_legacy_h5(path, config)
        else:
            write_keras(path, config)

    return build


def _sequential_build_shape() -> dict[str, Any]:
    """A Sequential model without an InputLayer: Keras builds it for its ``build_input_shape``."""
    config = {"name": "hostile", "trainable": True, "layers": [flatten(), dense()]}
    return obj("keras", "Sequential", {**config, "build_input_shape": [None, 3000, 3000, 3]})


def _free_tensor() -> dict[str, Any]:
    """A Functional model whose Dense layer is called on a tensor from no layer, of 3 M features."""
    image = called(obj("keras.layers", "InputLayer", {"batch_shape": [None, 32, 32, 3], "name": "image"}))
    pool, head = benign_layers()
    layers = [
        image,
        called(pool, keras_tensor([None, 32, 32, 3], ["image", 0, 0])),
        called(head, keras_tensor([None, 3_000_000], None)),
    ]
    config = {"name": "hostile", "trainable": True, "layers": layers}
    return obj(
        "keras.src.models.functional",
        "Functional",
        {**config, "input_layers": ["image", 0, 0], "output_layers": ["dense", 0, 0]},
    )


def layer(class_name: str, name: str, **config: Any) -> dict[str, Any]:
    """A built-in Keras layer as Keras 3 writes it."""
    return obj("keras.layers", class_name, {"name": name, "trainable": True, "dtype": "float32", **config})


def _through(bomb: dict[str, Any]) -> dict[str, Any]:
    """The benign model with ``bomb`` between its input and its layers."""
    return sequential(bomb, *benign_layers())


def _many_layers(path: Path, marker: Path) -> None:
    flat = [obj("keras.layers", "Flatten", {"name": f"flat{i}"}) for i in range(2000)]
    write_keras(path, sequential(*flat))


@dataclass(frozen=True)
class Hostile:
    """One hostile file: how to build it, what it tries, and how it must be refused."""

    name: str  # the file's name (its suffix decides .keras or legacy .h5)
    cve: str
    technique: str
    refusal: str  # a regular expression the refusal's message matches
    build: Callable[[Path, Path], None]  # (file, marker)
    reads: bool = False  # the payload reads the marker (else it would create it)


#: Configs that make Keras allocate far more than the file holds (or other variables than it holds):
#: Keras builds every variable from the config before it reads the weights file.
ALLOCATION_BOMBS: list[Hostile] = [
    Hostile(
        "dense_units.keras",
        "CWE-789",
        "Flatten then Dense(units=20000): 61 M weights for a file of 40",
        r"its config builds 61,460,000 weights in 2 arrays, but its weights file holds 40 in 2 "
        r"\(the file lacks \(3072, 20000\), \(20000,\); the config has no place for \(3, 10\), \(10,\)\)",
        _allocation_bomb(sequential(flatten(), dense(units=20_000))),
    ),
    Hostile(
        "dense_units.h5",
        "CWE-789",
        "legacy .h5: Flatten then Dense(units=20000)",
        r"its config builds 61,460,000 weights in 2 arrays, but its weights file holds 40 in 2",
        _allocation_bomb(sequential(flatten(None), dense(None, units=20_000), module=None)),
    ),
    Hostile(
        "dense_million_units.keras",
        "CWE-789",
        "Flatten then Dense(units=1,000,000): 3 G weights (12 GB)",
        r"its config builds over 268,435,456 weights \(3,073,000,000 by the layer 'dense' \(Dense\)\)",
        _allocation_bomb(sequential(flatten(), dense(units=1_000_000))),
    ),
    Hostile(
        "conv_filters.keras",
        "CWE-789",
        "Conv2D(filters=1,000,000): 27 M weights and a 30x30x1,000,000 feature map per image",
        r"its layers output over 67,108,864 numbers per image \(900,003,072 by the layer 'conv' \(Conv2D\), "
        r"whose output per image is 30x30x1000000\)",
        _allocation_bomb(sequential(conv2d(filters=1_000_000), *benign_layers())),
    ),
    Hostile(
        "kernel_size.keras",
        "CWE-789",
        "Conv2D(kernel_size=10,000 x 10,000, padding='same'): 3 G weights",
        r"its config builds over 268,435,456 weights \(3,000,000,010 by the layer 'conv' \(Conv2D\)\)",
        _allocation_bomb(
            sequential(conv2d(filters=10, kernel_size=[10_000, 10_000], padding="same"), *benign_layers())
        ),
    ),
    Hostile(
        "input_shape.keras",
        "CWE-789",
        "InputLayer of batch_shape (None, 100,000, 100,000, 3), then Flatten and Dense(10)",
        r"its layers output over 67,108,864 numbers per image \(30,000,000,000 by the layer 'image' "
        r"\(InputLayer\), whose output per image is 100000x100000x3\)",
        _allocation_bomb(sequential(flatten(), dense(), batch_shape=[None, 100_000, 100_000, 3])),
    ),
    Hostile(
        "sequential_build_shape.keras",
        "CWE-789",
        "a Sequential model without an InputLayer, built for build_input_shape (None, 3000, 3000, 3)",
        r"its config builds over 268,435,456 weights \(270,000,010 by the layer 'dense' \(Dense\)\)",
        _allocation_bomb(_sequential_build_shape()),
    ),
    Hostile(
        "build_config.keras",
        "CWE-789",
        "a Dense layer whose build_config has Keras build it for 3 M input features",
        r"the layer 'dense' \(Dense\) is built for inputs \[\(3000000,\)\] but the graph gives it \[\(3,\)\]",
        _allocation_bomb(
            sequential(benign_layers()[0], {**dense(), "build_config": {"input_shape": [None, 3_000_000]}})
        ),
    ),
    Hostile(
        "free_tensor.keras",
        "CWE-789",
        "a Functional Dense layer called on a tensor from no layer, of 3 M features",
        r"the layer 'dense' \(Dense\) is called on a tensor that comes from no layer",
        _allocation_bomb(_free_tensor()),
    ),
    Hostile(
        "lora_rank.keras",
        "CWE-789",
        "Dense(lora_rank=100,000,000): LoRA factors of 1.3 G weights, which the weights file never holds",
        r"its config builds over 268,435,456 weights \(1,300,000,040 by the layer 'dense' \(Dense\)\)",
        _allocation_bomb(sequential(*benign_layers(lora_rank=100_000_000))),
    ),
    # Through the layers imported by default since issue 15: each size-deciding parameter.
    Hostile(
        "depth_multiplier.keras",
        "CWE-789",
        "DepthwiseConv2D(depth_multiplier=10,000,000): 270 M weights",
        r"its config builds over 268,435,456 weights \(270,000,000 by the layer 'depthwise' "
        r"\(DepthwiseConv2D\)\)",
        _allocation_bomb(
            _through(
                layer(
                    "DepthwiseConv2D",
                    "depthwise",
                    kernel_size=[3, 3],
                    depth_multiplier=10_000_000,
                    use_bias=False,
                    padding="same",
                )
            )
        ),
    ),
    Hostile(
        "separable_filters.keras",
        "CWE-789",
        "SeparableConv2D(filters=100,000,000): a pointwise kernel of 300 M weights",
        r"its config builds over 268,435,456 weights \(300,000,027 by the layer 'separable' "
        r"\(SeparableConv2D\)\)",
        _allocation_bomb(
            _through(
                layer(
                    "SeparableConv2D",
                    "separable",
                    filters=100_000_000,
                    kernel_size=[3, 3],
                    use_bias=False,
                    padding="same",
                )
            )
        ),
    ),
    Hostile(
        "transpose_strides.keras",
        "CWE-789",
        "Conv2DTranspose(strides=100,000): a 3.2 M x 3.2 M output per image",
        r"its layers output over 67,108,864 numbers per image \(.* by the layer 'up' \(Conv2DTranspose\), "
        r"whose output per image is 3200000x3200000x3\)",
        _allocation_bomb(
            _through(
                layer(
                    "Conv2DTranspose",
                    "up",
                    filters=3,
                    kernel_size=[3, 3],
                    strides=[100_000, 100_000],
                    padding="same",
                    use_bias=False,
                )
            )
        ),
    ),
    Hostile(
        "upsampling_size.keras",
        "CWE-789",
        "UpSampling2D(size=(100,000, 100,000))",
        r"its layers output over 67,108,864 numbers per image \(.* by the layer 'up' \(UpSampling2D\)",
        _allocation_bomb(_through(layer("UpSampling2D", "up", size=[100_000, 100_000]))),
    ),
    Hostile(
        "resizing_size.keras",
        "CWE-789",
        "Resizing(height=100,000, width=100,000)",
        r"its layers output over 67,108,864 numbers per image \(.* by the layer 'resize' \(Resizing\)",
        _allocation_bomb(_through(layer("Resizing", "resize", height=100_000, width=100_000))),
    ),
    Hostile(
        "zero_padding.keras",
        "CWE-789",
        "ZeroPadding2D(padding=100,000): a 200,032 x 200,032 image",
        r"its layers output over 67,108,864 numbers per image \(.* by the layer 'pad' \(ZeroPadding2D\)",
        _allocation_bomb(
            _through(layer("ZeroPadding2D", "pad", padding=[[100_000, 100_000], [100_000, 100_000]]))
        ),
    ),
    Hostile(
        "reshape_target.keras",
        "CWE-789",
        "Reshape to (100,000, 100,000, 3) from a 32x32x3 image",
        r"the layer 'shape' \(Reshape\) reshapes \(32, 32, 3\) \(3,072 numbers\) to \[100000, 100000, 3\]",
        _allocation_bomb(_through(layer("Reshape", "shape", target_shape=[100_000, 100_000, 3]))),
    ),
    Hostile(
        "prelu_shared.keras",
        "(confusion)",
        "PReLU over the benign weights: its alpha is a variable the weights file does not hold",
        r"its config builds 3,112 weights in 3 arrays, but its weights file holds 40 in 2",
        _allocation_bomb(_through(layer("PReLU", "prelu", shared_axes=None))),
    ),
    Hostile(
        "weights_mismatch.keras",
        "(confusion)",
        "a config of Dense(12) over the weights of Dense(10)",
        r"its config builds 48 weights in 2 arrays, but its weights file holds 40 in 2 "
        r"\(the file lacks \(3, 12\), \(12,\); the config has no place for \(3, 10\), \(10,\)\)",
        _allocation_bomb(sequential(*benign_layers(units=12))),
    ),
    Hostile(
        "weights_mismatch.h5",
        "(confusion)",
        "legacy .h5: a config of Dense(12) over the weights of Dense(10)",
        r"its config builds 48 weights in 2 arrays, but its weights file holds 40 in 2",
        _allocation_bomb(sequential(*benign_layers(None, units=12), module=None)),
    ),
]

CORPUS: list[Hostile] = [
    Hostile(
        "lambda.keras",
        "CVE-2024-3660",
        "Lambda layer holding marshalled bytecode",
        r"'keras\.layers\.Lambda', which runs code",
        _lambda_keras,
    ),
    Hostile(
        "lambda.h5",
        "CVE-2025-9905",
        "Lambda layer with bytecode in a legacy .h5 (which ignored safe_mode)",
        r"'Lambda', which runs code",
        _lambda_h5,
    ),
    Hostile(
        "os_system.keras",
        "CVE-2025-1550",
        "a Dense layer's activation naming the function os.system",
        r"function 'os\.system', which is not Keras'",
        _in_dense(activation=obj("os", "function", "system", "function")),
    ),
    Hostile(
        "builtins_exec.keras",
        "CVE-2025-1550",
        "a kernel initializer naming builtins.exec",
        r"function 'builtins\.exec', which is not Keras'",
        _in_dense(kernel_initializer=obj("builtins", "function", "exec", "function")),
    ),
    Hostile(
        "subprocess_popen.keras",
        "CVE-2025-1550",
        "a kernel regularizer naming subprocess.Popen(['touch', marker])",
        r"'subprocess\.Popen', which is not a Keras building block",
        _popen,
    ),
    Hostile(
        "registered_name.keras",
        "CVE-2025-1550",
        "a Keras initializer whose registered_name points outside Keras ('os>system')",
        r"registered as 'os>system'",
        _in_dense(bias_initializer=obj("keras.initializers", "Zeros", {}, "os>system")),
    ),
    Hostile(
        "keras_get_file.keras",
        "CVE-2025-8747",
        "a config object calling keras.utils.get_file (writes the marker)",
        r"'keras\.utils\.get_file', which is not a Keras building block",
        _get_file,
    ),
    Hostile(
        "enable_unsafe.keras",
        "CVE-2025-9906",
        "an activation calling keras.config.enable_unsafe_deserialization",
        r"function 'keras\.config\.enable_unsafe_deserialization'",
        _in_dense(activation=obj("keras.config", "function", "enable_unsafe_deserialization", "function")),
    ),
    Hostile(
        "nested_lambda.keras",
        "CVE-2025-9906",
        "a __lambda__ (bytecode) as a Dense layer's activation",
        r"'__lambda__', which runs code",
        _nested_lambda,
    ),
    Hostile(
        "torch_wrapper.keras",
        "CVE-2025-49655",
        "TorchModuleWrapper holding a pickle that creates the marker",
        r"'keras\.layers\.TorchModuleWrapper', which runs code",
        _torch_wrapper,
    ),
    Hostile(
        "tfsm_layer.keras",
        "CVE-2026-1462",
        "TFSMLayer loading a TensorFlow SavedModel from a local path",
        r"'keras\.layers\.TFSMLayer', which runs code",
        _tfsm,
    ),
    Hostile(
        "jax_layer.keras",
        "(same family)",
        "JaxLayer whose call_fn names subprocess.getoutput",
        r"'keras\.layers\.JaxLayer', which runs code",
        _jax,
    ),
    Hostile(
        "external_dataset.keras",
        "CVE-2026-1669",
        "model.weights.h5: a weight stored in a local file (HDF5 external storage)",
        r"its model\.weights\.h5 has a dataset 'layers/dense/vars/0' stored in another file",
        _weights(external_storage, write_secret_bytes),
        reads=True,
    ),
    Hostile(
        "external_dataset.h5",
        "CVE-2026-1669",
        "legacy .h5: a weight stored in a local file (HDF5 external storage)",
        r"the file has a dataset '.*kernel' stored in another file",
        _weights(external_storage, write_secret_bytes),
        reads=True,
    ),
    Hostile(
        "virtual_dataset.keras",
        "CVE-2026-12480",
        "model.weights.h5: a virtual dataset mapping another local HDF5 file",
        r"its model\.weights\.h5 has a virtual dataset 'layers/dense/vars/0' mapping",
        _weights(virtual_dataset, write_secret_h5),
        reads=True,
    ),
    Hostile(
        "virtual_dataset.h5",
        "CVE-2026-12480",
        "legacy .h5: a virtual dataset mapping another local HDF5 file",
        r"the file has a virtual dataset '.*kernel' mapping",
        _weights(virtual_dataset, write_secret_h5),
        reads=True,
    ),
    Hostile(
        "external_link.keras",
        "CVE-2026-1669 (variant)",
        "model.weights.h5: the kernel is an external link into another HDF5 file",
        r"links 'layers/dense/vars/0' to another file",
        _weights(external_link, write_secret_h5),
        reads=True,
    ),
    Hostile(
        "soft_link.h5",
        "(variant)",
        "legacy .h5: the kernel is a soft link",
        r"has a SoftLink '.*kernel'",
        _weights(lambda marker: soft_link),
    ),
    Hostile(
        "shape_bomb.keras",
        "CVE-2026-0897",
        "model.weights.h5: a dataset declaring 9 PB in a few KB",
        r"declaring 8\.9 PiB but storing 0 bytes \(a shape bomb\)",
        _weights(lambda marker: shape_bomb),
    ),
    Hostile(
        "shape_bomb.h5",
        "CVE-2026-0897",
        "legacy .h5: a dataset declaring 9 PB in a few KB",
        r"declaring 8\.9 PiB but storing 0 bytes \(a shape bomb\)",
        _weights(lambda marker: shape_bomb),
    ),
    Hostile(
        "zip_bomb_config.keras",
        "CWE-409",
        "config.json inflating 1 MiB into 1 GiB",
        r"'config\.json' unpacks [\d.]+ [KM]iB into 1\.0 GiB \(a zip bomb\)",
        _zip_bomb("config.json", b" ", 1 << 30),
    ),
    Hostile(
        "zip_bomb_weights.keras",
        "CWE-409",
        "model.weights.h5 inflating 1.5 MiB into 1.5 GiB",
        r"'model\.weights\.h5' unpacks [\d.]+ [KM]iB into 1\.5 GiB \(a zip bomb\)",
        _zip_bomb("model.weights.h5", b"\0", 3 << 29),
    ),
    Hostile(
        "huge_declared.keras",
        "CWE-409",
        "stored entries each declaring 3.75 GiB",
        r"entries unpack to over 2\.0 GiB",
        _huge_declared,
    ),
    Hostile(
        "many_entries.keras",
        "CWE-400",
        "50,003 zip entries (a directory too big to parse)",
        r"directory lists 50,003 entries",
        _many_entries,
    ),
    Hostile(
        "path_traversal.keras",
        "CWE-22",
        "an entry named ../escaped.txt",
        r"'\.\./escaped\.txt' has a path that leaves its folder",
        lambda path, marker: write_with_entry(path, "../escaped.txt"),
    ),
    Hostile(
        "duplicate_config.keras",
        "(confusion)",
        "two config.json entries, the second with a Lambda",
        r"'config\.json' appears twice",
        _duplicate_config,
    ),
    Hostile(
        "symlink_entry.keras",
        "CWE-59",
        "an assets/ entry that is a symbolic link to the marker",
        r"'assets/secret' is a symbolic link",
        _symlink,
    ),
    Hostile(
        "many_layers.keras",
        "CWE-400",
        "2,000 layers (Keras would build them all)",
        r"over 1,000 layers",
        _many_layers,
    ),
    *ALLOCATION_BOMBS,
]

BY_NAME = {item.name: item for item in CORPUS}

#: Entry names that leave the folder a zip is unpacked into, each refused like ``path_traversal.keras``.
TRAVERSAL_NAMES = [
    "../escaped.txt",
    "/etc/cron.d/escaped",
    "assets/../../escaped",
    "..\\escaped.txt",
    "C:/escaped.txt",
]


class PeakRss:
    """How far this process's resident memory rose at its peak inside ``with`` (``grew``, in bytes).

    Linux keeps the peak (VmHWM in /proc/self/status) and sets it back to the current size when 5 is
    written to /proc/self/clear_refs; psutil gives that size on entry. So an allocation freed again
    before the block ends still counts. Measure in a fresh process: memory an allocator kept from an
    earlier allocation is reused without the peak moving.
    """

    def __enter__(self) -> PeakRss:
        Path("/proc/self/clear_refs").write_text("5")
        self.start = psutil.Process().memory_info().rss
        self.grew = 0
        return self

    def __exit__(self, *exc: object) -> None:
        peak = re.search(r"^VmHWM:\s+(\d+) kB$", Path("/proc/self/status").read_text(), re.MULTILINE)
        assert peak, "no VmHWM in /proc/self/status"
        self.grew = int(peak[1]) * 1024 - self.start
