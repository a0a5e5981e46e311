"""Classify a photo from several views of it, not from one centre crop.

A CIFAR-10 model has learnt 32x32 pictures in which the object fills the frame. A person's photo is not
one: the object is often small and off-centre, so the one centre crop that
:func:`~jupyter_cifar.engine.images.load_image` makes of it shows the model mostly background. Here a photo
is decoded once, whole, at a bounded working size (:func:`decode_photos`); the model then sees several views
cut from it (the whole frame squashed to a square, and overlapping square crops of a half and a third of its
shorter side, each also mirrored), and their probabilities become one answer (:func:`photo_probabilities`).

How they are combined matters more than which views there are. Averaging them drowns the object in its
background (on generated photos the mean did worse than the one centre crop), and taking the most
confident view throws away the whole frame, which is the right view when the object fills it (a
confident crop of a cat's head says "dog": 18 points lost on enlarged CIFAR pictures). The default,
``contrast``, scores each view by how much its probabilities stand out from the picture's average view,
counts the whole frame twice, and answers with the best-scoring view. Measured with `fast` (2 cores):
1,000 generated photos 0.18 -> 0.35, 1,000 enlarged test pictures (the object filling the frame) 0.745 ->
0.765, about 26 ms a photo instead of 0.6. Counting the whole frame less finds more small objects and
spoils more large ones (1.5 times: 0.42 and 0.736). The figures, with the strategies not kept, are
benchmarks/photo_views.py's.

Which is right depends on the photos: a person's labelled photos say it. A fine-tuned version carries the
combination of its views that did best on the photos it was trained on (measured with the model before
training on them, :func:`plan_choices`), in its metadata's ``views``; classify and evaluate read it
(:func:`stored_plan`) wherever they are given a stored version.

The views only start where the picture is clearly larger than what the model takes (longer side more
than 1.5 times :data:`~jupyter_cifar.engine.images.SIZE`): a CIFAR-like 32x32 picture keeps its one view and
gets exactly the probabilities it got before, so accuracy on the test set does not move.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from ..errors import BadParameter, ImageError
from .images import FITS, MAX_PIXELS, SIZE, WITHIN, ImageSource, load_image, load_images

if TYPE_CHECKING:
    import keras

__all__ = [
    "COMBINES",
    "DEFAULT_PLAN",
    "VIEWS",
    "WORKING_SIDE",
    "ViewPlan",
    "combine",
    "crop_boxes",
    "decode_photos",
    "make_views",
    "photo_probabilities",
    "plan_choices",
    "plan_from_json",
    "stack_probabilities",
    "stored_plan",
    "uses_views",
    "view_probabilities",
]

#: ``auto``: several views for a picture clearly larger than the model's input, one for the others;
#: ``single``: one centre crop, as :func:`~jupyter_cifar.engine.images.load_image` makes; ``multi``: several
#: views whatever the size (a 32x32 picture then gets crops of 16 and 11 pixels, which costs accuracy).
VIEWS = ("auto", "single", "multi")

#: How the views' probabilities become one row (see :func:`combine`).
COMBINES = ("contrast", "max", "mean", "logmean")

#: A photo is decoded, whole, to at most this many pixels on its longer side: enough for a crop of a third
#: of it to still be larger than the model's 32 pixels, and little to decode and cut views from.
WORKING_SIDE = 256

#: A picture gets several views (in "auto") when its longer side is more than this many times the view's.
MULTI_ABOVE = 1.5

#: ``contrast`` divides a view's probability of a class by the picture's mean probability of it to this
#: power: 0 would be plain max-confidence, 1 favours classes no other view sees (measured: 0.5 best).
CONTRAST_POWER = 0.5

# Views are built and classified this many at a time: a multiple of predict.BATCH, so that pictures with
# one view each are classified in the very batches predict_proba(model, x) would use, bit for bit.
_CHUNK_VIEWS = 4096


def _check_views(views: str) -> None:
    if views not in VIEWS:
        raise BadParameter("views", f"must be one of {', '.join(VIEWS)}, not {views!r}")


@dataclass(frozen=True)
class ViewPlan:
    """Which views of a large picture the model sees, and how their probabilities are combined.

    ``whole``: how the whole frame is made square (one of :data:`~jupyter_cifar.engine.images.FITS`), or None
    for no whole-frame view; ``scales``: square crops whose side is these fractions of the frame's shorter
    side, laid over it in a grid; ``overlap``: the least fraction of its side a crop shares with its
    neighbour; ``flip``: each view is also seen mirrored (the two count as one view, averaged);
    ``combine``: one of :data:`COMBINES`; ``whole_weight``: how many crops the whole-frame view counts as.
    """

    whole: str | None = "squish"
    scales: tuple[float, ...] = (1 / 2, 1 / 3)
    overlap: float = 0.5
    flip: bool = True
    combine: str = "contrast"
    whole_weight: float = 2.0

    def __post_init__(self) -> None:
        if self.whole is not None and self.whole not in FITS:
            raise BadParameter("whole", f"must be one of {', '.join(FITS)} or None, not {self.whole!r}")
        if self.whole is None and not self.scales:
            raise BadParameter("scales", "a plan without a whole-frame view needs at least one crop scale")
        for scale in self.scales:
            if not (isinstance(scale, int | float) and 0 < scale <= 1):
                raise BadParameter("scales", f"each must be in (0, 1], not {scale!r}")
        if not (isinstance(self.overlap, int | float) and 0 <= self.overlap < 1):
            raise BadParameter("overlap", f"must be in [0, 1), not {self.overlap!r}")
        if not isinstance(self.flip, bool):
            raise BadParameter("flip", f"must be true or false, not {self.flip!r}")
        if self.combine not in COMBINES:
            raise BadParameter("combine", f"must be one of {', '.join(COMBINES)}, not {self.combine!r}")
        if not (isinstance(self.whole_weight, int | float) and self.whole_weight > 0):
            raise BadParameter("whole_weight", f"must be a positive number, not {self.whole_weight!r}")

    def to_json(self) -> dict[str, Any]:
        return {"whole": self.whole, "scales": list(self.scales), "overlap": self.overlap, "flip": self.flip,
                "combine": self.combine, "whole_weight": self.whole_weight}  # fmt: skip

    def describe(self) -> str:
        """A short line for people: "contrast, whole frame x2"."""
        whole = "no whole frame" if self.whole is None else f"whole frame x{self.whole_weight:g}"
        return f"{self.combine}, {whole}"


#: The views and combination classify() uses (measured in benchmarks/photo_views.py).
DEFAULT_PLAN = ViewPlan()


def stored_plan(metadata: Mapping[str, Any] | None) -> ViewPlan:
    """The plan a stored version classifies photos with: its metadata's ``views`` (a fine-tuning chose it
    on the photos it trained on), else :data:`DEFAULT_PLAN`. Metadata is whatever JSON its saver sent: a
    ``views`` that is not a valid plan counts as absent."""
    return plan_from_json((metadata or {}).get("views")) or DEFAULT_PLAN


def plan_from_json(value: Any) -> ViewPlan | None:
    """The plan a ``to_json`` dict (or part of one: the rest default) describes; None for anything else."""
    if not isinstance(value, dict):
        return None
    fields = {k: value[k] for k in DEFAULT_PLAN.to_json() if k in value}
    if isinstance(fields.get("scales"), list):
        fields["scales"] = tuple(fields["scales"])
    try:
        return ViewPlan(**fields)
    except (BadParameter, TypeError):
        return None


def plan_choices(plan: ViewPlan = DEFAULT_PLAN) -> list[ViewPlan]:
    """``plan`` and the combinations of the same views that count the whole frame once, by contrast or by
    the most confident view: what a fine-tuning chooses from for its version. The whole frame counted
    twice keeps an object that fills the frame; once, it finds more small ones (`fast` on 1,000 generated
    photos: 0.35 and 0.47; benchmarks/finetune_photos.py prints what the choice costs a fine-tuned version
    on pictures the object fills). Which kind a person's photos are, their labelled photos say."""
    choices = [plan]
    for other in (
        replace(plan, combine="contrast", whole_weight=1.0),
        replace(plan, combine="max", whole_weight=1.0),
    ):
        if other not in choices and plan.whole is not None:
            choices.append(other)
    return choices


def decode_photos(
    sources: Iterable[ImageSource],
    *,
    names: Iterable[str | None] | None = None,
    max_side: int = WORKING_SIDE,
    max_pixels: int = MAX_PIXELS,
) -> list[np.ndarray | ImageError]:
    """Decode each source whole, as an (h, w, 3) uint8 array at most ``max_side`` on its longer side.

    A picture already that small keeps its own pixels (a 32x32 one is what load_image gives). As with
    :func:`~jupyter_cifar.engine.images.load_images`, a source that cannot be decoded gets its ImageError in
    its slot and the others are still decoded.
    """
    return load_images(sources, names=names, size=(max_side, max_side), fit=WITHIN, max_pixels=max_pixels)


def uses_views(shape: tuple[int, ...], views: str = "auto", size: tuple[int, int] = SIZE) -> bool:
    """Whether a picture of ``shape`` (height, width, ...) is seen through several views."""
    _check_views(views)
    if views != "auto":
        return views == "multi"
    return max(shape[0] / size[1], shape[1] / size[0]) > MULTI_ABOVE


def crop_boxes(width: int, height: int, plan: ViewPlan = DEFAULT_PLAN) -> list[tuple[int, int, int, int]]:
    """The (left, top, right, bottom) of each square crop ``plan`` cuts from a ``width`` x ``height`` frame.

    At each scale the crops are spread evenly from edge to edge, as many along each side as keeps
    neighbours overlapping by at least ``plan.overlap`` of their side, so that an object anywhere in the
    frame is mostly inside some crop of about its size.
    """
    boxes = []
    for scale in plan.scales:
        side = max(1, round(scale * min(width, height)))
        stride = max(1.0, side * (1 - plan.overlap))
        lefts, tops = _spread(width - side, stride), _spread(height - side, stride)
        boxes += [(left, top, left + side, top + side) for top in tops for left in lefts]
    return boxes


def _spread(room: int, stride: float) -> list[int]:
    """Offsets from 0 to ``room`` inclusive, evenly spaced, at most ``stride`` apart."""
    if room <= 0:
        return [0]
    steps = math.ceil(room / stride - 1e-9)
    return [round(room * k / steps) for k in range(steps + 1)]


def make_views(
    image: np.ndarray, views: str = "auto", plan: ViewPlan = DEFAULT_PLAN, size: tuple[int, int] = SIZE
) -> np.ndarray:
    """The views of one decoded picture (h, w, 3), as (v, size[1], size[0], 3) uint8.

    One view, the centre crop load_image makes, unless :func:`uses_views` says several; then, in this
    order, the whole frame made square as ``plan.whole`` says, the crops of :func:`crop_boxes`, and with
    ``plan.flip`` all of those again, mirrored (the layout :func:`combine` reads).
    """
    frame = _as_frame(image)
    if not uses_views(frame.shape, views, size):
        return load_image(frame, size=size, fit="crop")[None]
    out = [] if plan.whole is None else [load_image(frame, size=size, fit=plan.whole)]
    picture = Image.fromarray(frame)
    for box in crop_boxes(frame.shape[1], frame.shape[0], plan):
        out.append(np.asarray(picture.resize(size, Image.Resampling.LANCZOS, box=box)))
    stacked = np.stack(out)
    return np.concatenate([stacked, stacked[:, :, ::-1]]) if plan.flip else stacked


def combine(probs: np.ndarray, plan: ViewPlan = DEFAULT_PLAN) -> np.ndarray:
    """One probability row (classes,) from the rows (v, classes) of the views :func:`make_views` made.

    A single view is returned as it is. Otherwise a view and its mirror image are first averaged into one
    view, then, as ``plan.combine`` says, with the whole frame (if any) counting ``plan.whole_weight``
    times: ``contrast`` answers with the view whose probability of some class, divided by the square root
    of the mean over views (:data:`CONTRAST_POWER`), is the highest: the view that stands out from the
    rest of the picture; ``max`` with the view whose top probability is the highest; ``mean`` with the
    views' mean; ``logmean`` with their geometric mean, renormalised.
    """
    rows = np.asarray(probs, np.float64)
    if len(rows) == 1:
        return rows[0].astype(np.float32)
    if plan.flip:
        if len(rows) % 2:
            raise BadParameter("probs", f"mirrored views come in pairs; got {len(rows)} rows")
        half = len(rows) // 2
        rows = (rows[:half] + rows[half:]) / 2
    weights = np.ones(len(rows))
    if plan.whole is not None:
        weights[0] = plan.whole_weight
    if plan.combine == "mean":
        out = weights @ rows
    elif plan.combine == "logmean":
        logs = weights @ np.log(np.clip(rows, 1e-12, None)) / weights.sum()
        out = np.exp(logs - logs.max())
    else:
        score = rows
        if plan.combine == "contrast":
            average = weights @ rows / weights.sum()
            score = rows / np.clip(average, 1e-12, None) ** CONTRAST_POWER
        out = rows[int(np.argmax(score.max(axis=1) * weights))]
    return (out / out.sum()).astype(np.float32)


def photo_probabilities(
    model: keras.Model,
    images: Sequence[np.ndarray] | np.ndarray,
    views: str = "auto",
    plan: ViewPlan = DEFAULT_PLAN,
) -> np.ndarray:
    """Class probabilities (n, classes) for decoded pictures of any size, each from its views combined.

    ``images``: arrays as :func:`decode_photos` gives them (or a stacked (n, 32, 32, 3) set). The views of
    many pictures go through :func:`~jupyter_cifar.engine.predict.predict_proba` together, a few thousand at a
    time. A 32x32 picture has one view and gets the very probabilities ``predict_proba`` gives it, so
    ``photo_probabilities(model, x_test)`` is ``predict_proba(model, x_test)``.

    To evaluate a labelled set of photos: :func:`decode_photos` them, pass the ones that decoded here, and
    these rows with their labels to :func:`~jupyter_cifar.engine.predict.evaluate_probabilities`.
    """
    _check_views(views)
    return stack_probabilities(model, (make_views(image, views, plan) for image in images), plan)


def stack_probabilities(
    model: keras.Model, stacks: Iterable[np.ndarray], plan: ViewPlan = DEFAULT_PLAN
) -> np.ndarray:
    """:func:`photo_probabilities` from view stacks already made by :func:`make_views` with ``plan``: the
    views of a set are made once to be classified by several models (before and after a fine-tuning)."""
    rows = [combine(probs, plan) for probs in view_probabilities(model, stacks)]
    return np.stack(rows) if rows else np.zeros((0, model.output_shape[-1]), np.float32)


def view_probabilities(model: keras.Model, stacks: Iterable[np.ndarray]) -> list[np.ndarray]:
    """Each stack's views' probabilities (v, classes), uncombined: to combine them several ways."""
    from .predict import predict_proba

    rows: list[np.ndarray] = []
    for chunk in _chunks(stacks):
        probs = predict_proba(model, np.concatenate(chunk))
        start = 0
        for stack in chunk:
            rows.append(probs[start : start + len(stack)])
            start += len(stack)
    return rows


def _chunks(stacks: Iterable[np.ndarray]) -> Iterator[list[np.ndarray]]:
    """The pictures' view stacks, grouped until a group holds :data:`_CHUNK_VIEWS` views."""
    chunk: list[np.ndarray] = []
    count = 0
    for stack in stacks:
        chunk.append(stack)
        count += len(stack)
        if count >= _CHUNK_VIEWS:
            yield chunk
            chunk, count = [], 0
    if chunk:
        yield chunk


def _as_frame(image: np.ndarray) -> np.ndarray:
    """``image`` as (h, w, 3) uint8 at most WORKING_SIDE a side: as it is if it already is one, else made
    one as decode_photos would have (grey, alpha and other dtypes converted, then scaled down)."""
    if isinstance(image, ImageError):
        raise BadParameter("images", f"holds a picture that could not be decoded ({image}); leave it out")
    image = np.asarray(image)
    shape = image.shape
    small = image.ndim == 3 and min(shape[:2]) > 0 and max(shape[:2]) <= WORKING_SIDE
    if small and image.dtype == np.uint8 and shape[2] == 3:
        return image
    return load_image(image, name="<image>", size=(WORKING_SIDE, WORKING_SIDE), fit=WITHIN)
