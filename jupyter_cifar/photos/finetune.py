"""Evaluate a model on a user's photos, and fine-tune it on them without forgetting CIFAR-10.

Evaluation classifies each photo the way ``classify`` does (several views of a large photo, combined:
:mod:`jupyter_cifar.engine.views`). Fine-tuning trains the model further on views cut from the photos (the
whole frame and random square crops, as a photo's object may be anywhere in it) mixed with CIFAR-10 training
images (replay: at this size it keeps the old skill better than special methods, Chaudhry et al. 2019),
through the same :class:`~jupyter_cifar.engine.training.Trainer` as any training, so its curve, its stop and
its recipe are the usual ones. Before and after are measured on photos the fine-tuning did not see (a
stratified held-out part of the set) and on the CIFAR-10 test set, with the "negative flips": test images
the old version got right and the new one gets wrong.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import BadParameter, ImageError
from .labelled import LabelledPhotos

if TYPE_CHECKING:
    import keras

    from ..engine.data import Dataset
    from ..engine.predict import Evaluation
    from ..engine.training import Trainer, TrainResult
    from ..engine.views import ViewPlan

DEFAULT_EPOCHS = 4
DEFAULT_HOLDOUT = 0.2
VIEWS_PER_PHOTO = 16  # training views cut from each photo per fine-tuning (each epoch sees all of them)
REPLAY = 4.0  # CIFAR-10 training images per photo view
CROP = (1 / 3, 1.0)  # a training crop's side, as a share of the photo's shorter side
# Of the preset's own rate: the model is already trained. With 4x replay the test set does not drop even at
# a quarter (fast: 0.788 -> 0.794; with its Muon recipe 0.810 -> 0.815, Muon's rate a quarter too), and the
# photos need it: at 0.06 `fast` got only 0.51 of the 300 photos it was fine-tuned on right (underfitted),
# at 0.25 0.74-0.78 (SGD recipe; benchmarks/finetune_photos.py).
LEARNING_RATE_SHARE = 0.25


@dataclass
class PhotoEvaluation:
    evaluation: Evaluation
    skipped: list[dict[str, str]]  # {"file", "error"}: photos that could not be read
    where: str
    rows: list[int] = field(default_factory=list)  # which photo each evaluated one is (its ``index``)

    def to_json(self) -> dict[str, Any]:
        return {**self.evaluation.to_json(), "skipped": self.skipped, "photos": self.where}


@dataclass
class _Decoded:
    frames: list[np.ndarray]  # each readable photo, whole (views.decode_photos)
    labels: np.ndarray
    rows: list[int]  # which photo each frame is
    skipped: list[dict[str, str]]  # the photos that could not be read, named with why


def decode(photos: LabelledPhotos) -> _Decoded:
    from ..engine.views import decode_photos

    found = _Decoded([], np.zeros(0, np.int64), [], [])
    labels = []
    for i, item in enumerate(decode_photos(photos.sources, names=photos.names)):
        if isinstance(item, ImageError):
            found.skipped.append({"file": photos.names[i], "error": str(item)})
        else:
            found.frames.append(item)
            found.rows.append(i)
            labels.append(photos.labels[i])
    found.labels = np.asarray(labels, np.int64)
    return found


def evaluate_photos(
    model: keras.Model, photos: LabelledPhotos, views: str = "auto", plan: ViewPlan | None = None
) -> PhotoEvaluation:
    """Accuracy, per class and confusion of ``model`` on labelled photos (a photo that cannot be read is
    listed in ``skipped``, the rest evaluated); BadParameter when none can be read. ``plan``: the views
    the model classifies photos with (a stored version's: views.stored_plan), by default the default."""
    found = decode(photos)
    result = _evaluated(model, found.frames, found.labels, found.skipped, photos, views, plan)
    result.rows = found.rows
    return result


def _evaluated(
    model: keras.Model,
    frames: Sequence[np.ndarray],
    labels: np.ndarray,
    skipped: list[dict[str, str]],
    photos: LabelledPhotos,
    views: str = "auto",
    plan: ViewPlan | None = None,
) -> PhotoEvaluation:
    from ..engine.predict import evaluate_probabilities
    from ..engine.views import DEFAULT_PLAN, photo_probabilities

    if not len(frames):
        raise BadParameter("--photos", f"none of the {len(photos)} photos of {photos.where} could be read")
    _check_classes(model, photos.class_names)
    probs = photo_probabilities(model, list(frames), views, plan or DEFAULT_PLAN)
    return PhotoEvaluation(evaluate_probabilities(probs, labels, photos.class_names), skipped, photos.where)


def _accuracy(view_probs: Sequence[np.ndarray], labels: np.ndarray, plan: ViewPlan) -> float:
    """Accuracy on photos from their views' probabilities (views.view_probabilities) combined by ``plan``."""
    from ..engine.views import combine

    right = [combine(probs, plan).argmax() == label for probs, label in zip(view_probs, labels, strict=True)]
    return round(float(np.mean(right)), 6) if right else 0.0


def choose_views(
    view_probs: Sequence[np.ndarray], labels: np.ndarray, plan: ViewPlan
) -> tuple[ViewPlan, dict[str, float]]:
    """The combination of ``plan``'s views (:func:`~jupyter_cifar.engine.views.plan_choices`) that answers the
    most of these photos right, ``plan`` itself unless another does strictly better; with each one's
    accuracy. Measured with the model before it trains on them, so what it chooses is not what it has
    memorised."""
    from ..engine.views import plan_choices

    scores = {choice: _accuracy(view_probs, labels, choice) for choice in plan_choices(plan)}
    best = max(scores, key=lambda choice: (scores[choice], choice == plan))
    return best, {choice.describe(): score for choice, score in scores.items()}


def _check_classes(model: keras.Model, class_names: Sequence[str], parameter: str = "REF") -> None:
    outputs = model.output_shape[-1]
    if outputs != len(class_names):
        raise BadParameter(
            parameter,
            f"the model has {outputs} outputs, and the photos are labelled with {len(class_names)} classes",
        )


def stratified_split(labels: np.ndarray, holdout: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(train rows, held-out rows): ``holdout`` of each class held out (at least one where a class has
    two or more photos), chosen at random with ``seed``."""
    if not 0 <= holdout < 1:
        raise BadParameter("--holdout", f"must be at least 0 and below 1 (got {holdout})")
    rng = np.random.default_rng(seed)
    train: list[int] = []
    held: list[int] = []
    for c in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == c))
        k = 0 if holdout == 0 or len(rows) < 2 else max(1, round(len(rows) * holdout))
        held.extend(rows[:k])
        train.extend(rows[k:])
    return np.sort(np.asarray(train, np.int64)), np.sort(np.asarray(held, np.int64))


def training_views(frames: Sequence[np.ndarray], per_photo: int, seed: int = 0, side: int = 32) -> np.ndarray:
    """``per_photo`` 32x32 views of each photo: the whole frame, then square crops of a third to all of
    its shorter side at random places (the object may be anywhere, and small), in photo order."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    out = np.empty((len(frames) * per_photo, side, side, 3), np.uint8)
    for i, frame in enumerate(frames):
        img = Image.fromarray(frame)
        h, w = frame.shape[:2]
        short = min(h, w)
        for k in range(per_photo):
            if k == 0:
                box = (0, 0, w, h)
            else:
                crop = max(1, int(rng.uniform(*CROP) * short))
                left, top = int(rng.integers(0, w - crop + 1)), int(rng.integers(0, h - crop + 1))
                box = (left, top, left + crop, top + crop)
            view = img.resize((side, side), Image.Resampling.BILINEAR, box=box, reducing_gap=2.0)
            out[i * per_photo + k] = np.asarray(view)
    return out


@dataclass
class FinetuneResult:
    result: TrainResult
    photos_used: int
    holdout: int  # photos measured before and after (held out, or, with --holdout 0, the ones used)
    before: dict[str, float]  # {"photos", "test"}
    after: dict[str, float]
    negative_flips: int  # test images the old model got right and the new one gets wrong
    skipped: list[dict[str, str]]
    photos_where: str
    evaluation_after: PhotoEvaluation | None = None
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    views: dict[str, Any] = field(default_factory=dict)  # the version's view plan, and how it was chosen
    plan: ViewPlan | None = None

    @property
    def model(self) -> keras.Model:
        return self.result.model

    def summary(self) -> dict[str, Any]:
        return {
            "photos": self.photos_where,
            "photos_used": self.photos_used,
            "held_out": self.holdout,
            "before": self.before,
            "after": self.after,
            "negative_flips": self.negative_flips,
            "skipped": self.skipped,
            "views": self.views,
        }

    def metadata(self) -> dict[str, Any]:
        """The new version's metadata: the training's, with what the fine-tuning measured, and the view
        plan it classifies photos with (views.stored_plan reads it)."""
        out = {**self.result.metadata(), "finetune": self.summary()}
        if self.plan is not None:
            out["views"] = self.plan.to_json()
        return out


class FinetunePlan:
    """A fine-tuning made ready: the photos decoded and split, "before" measured, the mixed training set
    and the recipe built. :meth:`trainer` gives the :class:`~jupyter_cifar.engine.training.Trainer` to run (in
    this kernel, or in a job's process with its checkpoint), :meth:`finish` measures "after"."""

    def __init__(
        self,
        model: keras.Model,
        photos: LabelledPhotos,
        data: Dataset,
        *,
        preset: str = "fast",
        epochs: int = DEFAULT_EPOCHS,
        holdout: float = DEFAULT_HOLDOUT,
        seed: int = 0,
        learning_rate: float | None = None,
        test_limit: int | None = None,
        views: ViewPlan | None = None,
    ) -> None:
        from ..engine.nets import get_preset
        from ..engine.predict import predict_proba
        from ..engine.training import TrainConfig, why_not_trainable
        from ..engine.views import DEFAULT_PLAN, make_views, view_probabilities

        self.start = time.perf_counter()
        _check_classes(model, photos.class_names)
        if tuple(photos.class_names) != tuple(data.class_names):
            raise BadParameter("--photos", "the photos' classes are not the training data's")
        why = why_not_trainable(model, len(data.class_names))
        if why:
            raise BadParameter("REF", f"cannot be fine-tuned here: {why}")
        found = decode(photos)
        frames, labels = found.frames, found.labels
        if len(frames) < 2:
            raise BadParameter(
                "--photos", f"{photos.where} has {len(frames)} readable photo(s); fine-tuning needs more"
            )
        train_rows, held_rows = stratified_split(labels, holdout, seed)
        self.notes: list[str] = []
        if not len(held_rows):
            held_rows = train_rows
            self.notes.append("no photos held out: before and after are measured on the photos trained on")
        self.photos, self.skipped = photos, found.skipped
        self.used, self.held_labels = len(train_rows), labels[held_rows]
        # The version's view plan: the combination of the model's views that does best on the photos
        # trained on, measured before training on them. "before" is what the model answered with its own.
        self.parent_plan = views or DEFAULT_PLAN
        stacks = [make_views(frames[i], plan=self.parent_plan) for i in train_rows]
        self.plan, candidates = choose_views(
            view_probabilities(model, stacks), labels[train_rows], self.parent_plan
        )
        # The held-out photos' views, made once: measured before, and after with the same views.
        self.held = [make_views(frames[i], plan=self.parent_plan) for i in held_rows]
        held_before = view_probabilities(model, self.held)
        self.test = data.subset(None, test_limit)
        self.old_right = predict_proba(model, self.test.x_test).argmax(1) == self.test.y_test
        self.before = {
            "photos": _accuracy(held_before, self.held_labels, self.parent_plan),
            "test": round(float(self.old_right.mean()), 6),
        }
        self.views: dict[str, Any] = {
            "chosen": self.plan.describe(),
            "chosen_on": len(train_rows),
            "candidates": candidates,
            "before_photos": _accuracy(held_before, self.held_labels, self.plan),
        }
        x_photos = training_views([frames[i] for i in train_rows], VIEWS_PER_PHOTO, seed)
        y_photos = np.repeat(labels[train_rows], VIEWS_PER_PHOTO)
        rng = np.random.default_rng(seed + 1)
        replay = rng.choice(
            len(data.x_train), size=min(len(data.x_train), int(len(x_photos) * REPLAY)), replace=False
        )
        self.data = _mixed_dataset(data, self.test, x_photos, y_photos, replay, photos.where)
        # The preset's own batch, not the smaller one a short training gets (nets.Preset.min_steps): a few
        # gentle steps from a trained model, at a share of the preset's learning rate.
        recipe = get_preset(preset)
        batch = min(recipe.batch_size, len(self.data.x_train))
        rate = learning_rate if learning_rate is not None else recipe.learning_rate * LEARNING_RATE_SHARE
        self.config = TrainConfig(
            preset=preset, epochs=epochs, batch_size=batch, learning_rate=rate, seed=seed
        )

    def trainer(
        self,
        model: keras.Model,
        *,
        history: Sequence[dict[str, Any]] = (),
        parent: str | None = None,
        epochs: int | None = None,
        checkpoint: str | None = None,
    ) -> Trainer:
        """The training to run: ``model`` (the one measured "before", or a resumed job's checkpoint of
        it, with the ``epochs`` left) on the photos' views mixed with CIFAR-10 replay."""
        import dataclasses

        from ..engine.training import Trainer

        changes: dict[str, Any] = {"checkpoint": checkpoint}
        if epochs is not None:
            changes["epochs"] = epochs
        config = dataclasses.replace(self.config, **changes)
        return Trainer(self.data, config, model=model, history=history, parent=parent)

    def finish(self, result: TrainResult) -> FinetuneResult:
        """Measure the trained model "after", on the held-out photos and the test set (the training's own
        final evaluation, on the same test images)."""
        from ..engine.predict import evaluate_probabilities, predict_proba
        from ..engine.views import combine, view_probabilities

        if result.status == "failed":
            raise RuntimeError(f"fine-tuning failed: {result.error}")
        view_probs = view_probabilities(result.model, self.held)
        probs = np.stack([combine(p, self.plan) for p in view_probs])
        after_eval = PhotoEvaluation(
            evaluate_probabilities(probs, self.held_labels, self.photos.class_names), [], self.photos.where
        )
        views = {
            **self.views,
            "after_photos_parent_views": _accuracy(view_probs, self.held_labels, self.parent_plan),
        }
        predicted = result.test_predicted
        if predicted is None or len(predicted) != len(self.test.y_test):
            predicted = predict_proba(result.model, self.test.x_test).argmax(1)
        new_right = predicted == self.test.y_test
        return FinetuneResult(
            result=result,
            photos_used=self.used,
            holdout=len(self.held),
            before=self.before,
            after={"photos": after_eval.evaluation.accuracy, "test": round(float(new_right.mean()), 6)},
            negative_flips=int((self.old_right & ~new_right).sum()),
            skipped=self.skipped,
            photos_where=self.photos.where,
            evaluation_after=after_eval,
            seconds=time.perf_counter() - self.start,
            notes=self.notes,
            views=views,
            plan=self.plan,
        )


def finetune(
    model: keras.Model,
    photos: LabelledPhotos,
    data: Dataset,
    *,
    preset: str = "fast",
    epochs: int = DEFAULT_EPOCHS,
    holdout: float = DEFAULT_HOLDOUT,
    history: Sequence[dict[str, Any]] = (),
    parent: str | None = None,
    seed: int = 0,
    learning_rate: float | None = None,
    test_limit: int | None = None,
    views: ViewPlan | None = None,
    on_event: Callable[[dict[str, Any]], None] | None = None,
) -> FinetuneResult:
    """Train ``model`` further on ``photos`` with CIFAR-10 replay from ``data``; measure before and after.

    ``holdout`` of each class is kept aside to measure on (0: measure on the photos trained on, and say
    so). ``preset`` gives the recipe (its optimizer, at :data:`LEARNING_RATE_SHARE` of its learning rate
    unless ``learning_rate`` is given). ``views``: the plan ``model`` classifies photos with now (its
    version's, views.stored_plan; the default otherwise); the new version gets the combination of those
    views that does best on the photos trained on (:func:`choose_views`, in its metadata's ``views``).
    ``on_event`` sees the training's events (a progress bar, the app's curve).
    """
    plan = FinetunePlan(
        model, photos, data, preset=preset, epochs=epochs, holdout=holdout, seed=seed,
        learning_rate=learning_rate, test_limit=test_limit, views=views,
    )  # fmt: skip
    trainer = plan.trainer(model, history=history, parent=parent)
    if on_event is not None:
        trainer.subscribe(on_event)
    return plan.finish(trainer.run())


def _mixed_dataset(
    data: Dataset, test: Dataset, x_photos: np.ndarray, y_photos: np.ndarray, replay: np.ndarray, where: str
) -> Dataset:
    import dataclasses

    return dataclasses.replace(
        test,
        x_train=np.concatenate([x_photos, data.x_train[replay]]),
        y_train=np.concatenate([y_photos, data.y_train[replay].astype(y_photos.dtype)]),
        source=f"{where} ({len(x_photos)} views) with {len(replay)} CIFAR-10 training images ({data.source})",
        layout="photos+replay",
    )
