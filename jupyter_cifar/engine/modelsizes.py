"""The sizes a model file's config asks for, worked out without Keras before Keras builds anything.

Keras builds every layer's variables from the config before it reads one weight: a 13 KB file asking for
``Dense(units=20000)`` after a ``Flatten`` cost 0.8 GB of memory before Keras found that the weights file
did not fit. So the shapes are worked out here as Keras would work them out, from each model's input
through its layers (:func:`check_sizes`), and a model is refused if it would allocate more than
:data:`MAX_WEIGHTS` weights or :data:`MAX_ACTIVATIONS` numbers per image, or if the variables it would
build are not the ones its weights file holds. :mod:`jupyter_cifar.engine.modelfiles` calls it once the
container and the config's classes have passed.
"""

from __future__ import annotations

import heapq
import math
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import ModelFileError
from .layersizes import LAYER_SIZES, Shape, _clip, _Infer, _is_count, _Refused, _shown, _Sizes

MODEL_CLASSES = frozenset({"Functional", "Sequential", "Model"})
MAX_LAYERS = 1000  # in a config, nested models' included (the presets: under 50)
MAX_WEIGHTS = 1 << 28  # numbers in all datasets together: 268 M (1 GiB of float32)
# Numbers in all layers' outputs for one image, each call of a nested model counted: 64 M (256 MiB of
# float32). Keras holds a batch's worth while it runs a model (all of them while it trains): a batch of
# 32 images at this bound takes 8 GiB. The accurate preset: 2.2 M (its six test-time passes included).
MAX_ACTIVATIONS = 1 << 26
MAX_DIM = 1 << 16  # a size-deciding number of a layer whose sizes cannot be worked out (see _bounded)
MAX_RANK = 16  # dimensions of a tensor (Keras' built-in layers take at most 5, the batch's included)
MAX_NESTING = 16  # models inside models (the accurate preset: 2 levels)


_Ref = tuple[str, int, int]  # a tensor in a Functional graph: (layer name, node index, tensor index)
_Shapes = list[Shape | None]  # the shapes of a call's inputs or outputs (None: not known)
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
        infer = LAYER_SIZES.get(cls)
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


def _dict(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _Refused(f"{what} is {_shown(value)}, not a mapping")
    return value


def _list(value: Any, what: str) -> list[Any]:
    if not isinstance(value, list):
        raise _Refused(f"{what} is {_shown(value)}, not a list")
    return value
