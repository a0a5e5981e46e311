"""How an imported model takes its pixels, and the ``Rescaling`` that makes it take the app's 0..255 ones.

Every model here takes raw 0..255 pixels, its scaling a layer of the model (the presets' ``Rescaling``,
keras.applications' own). A model brought in without such a layer was trained on pixels its trainer
scaled itself: ``models import --scale 0-1`` (or ``-1-1``) puts the ``Rescaling`` that scaling was in
front of it; without ``--scale`` it is taken as it is, assuming 0..255 pixels, and the import says so.
What was assumed or added is kept in the version's metadata (``input_scaling``).
"""

from __future__ import annotations

from typing import Any

from ..errors import BadParameter

#: ``--scale``: the range its trainer fed it, and the Rescaling (scale, offset) that maps 0..255 to it.
SCALES: dict[str, tuple[float, float] | None] = {
    "0-255": None,
    "0-1": (1 / 255, 0.0),
    "-1-1": (1 / 127.5, -1.0),
}
SCALING_LAYERS = ("Rescaling", "Normalization")


def scales_its_input(model: Any) -> bool:
    """Whether the model has a layer that scales its input (here or in a model it nests)."""
    stack = list(model.layers)
    while stack:
        layer = stack.pop()
        if type(layer).__name__ in SCALING_LAYERS:
            return True
        stack += list(getattr(layer, "layers", []))
    return False


def with_input_scaling(model: Any, scale: float, offset: float = 0.0) -> Any:
    """The same network taking 0..255 pixels: ``Rescaling(scale, offset)`` then its layers."""
    import keras

    rescale = keras.layers.Rescaling(scale, offset, name="scale")
    if isinstance(model, keras.Sequential):
        return keras.Sequential([keras.Input(model.input_shape[1:]), rescale, *model.layers], name=model.name)
    inputs = keras.Input(model.input_shape[1:], name="image")
    return keras.Model(inputs, model(rescale(inputs)), name=model.name)


def scaling_plan(scales_itself: bool, scale: str | None) -> tuple[str, tuple[float, float] | None]:
    """For an import with ``--scale`` (None: not given) of a model that has (or has not) its own scaling
    layer: what to note of its input scaling, and the Rescaling (scale, offset) to put in front (None:
    the model goes in as it is)."""
    if scale is not None and scale not in SCALES:
        raise BadParameter("--scale", f"{scale!r} is not a pixel range ({', '.join(SCALES)})")
    if scales_itself:
        if scale not in (None, "0-255"):
            raise BadParameter(
                "--scale", "the model scales its input itself (it has a Rescaling or Normalization layer)"
            )
        return "0-255 pixels, scaled by the model's own layer", None
    if scale is None:
        return (
            "0-255 pixels assumed: the model has no Rescaling or Normalization layer; if it was trained "
            "on scaled pixels, import it again with --scale=0-1 or --scale=-1-1"
        ), None
    rescaling = SCALES[scale]
    if rescaling is None:
        return "0-255 pixels (--scale 0-255)", None
    return f"Rescaling to {scale} added in front (--scale {scale})", rescaling
