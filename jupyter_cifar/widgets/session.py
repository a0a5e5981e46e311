"""What the app's tabs share in one kernel: the store, the data, and the model in hand.

Kept apart from the widgets so that the tabs talk through it and not to each other. Long work (loading
the data, opening the store, loading a model) happens in background threads; results come back as trait
changes, which the widgets observe.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from traitlets import Any as AnyTrait
from traitlets import HasTraits, Unicode

from ..engine.views import DEFAULT_PLAN, ViewPlan, stored_plan

if TYPE_CHECKING:
    import keras

    from ..engine.data import Dataset
    from ..jobs.client import JobClient
    from ..photos.store import PhotoStore
    from ..store.base import ModelStore
    from ..store.records import ModelRecord


class Session(HasTraits):
    """The kernel's side of the app: one per App."""

    #: A short description of the model in hand, for people ("" when there is none).
    model_label = Unicode("")
    #: Bumped (to a new object) whenever the model in hand changes; widgets observe it.
    model_changed = AnyTrait(None)
    #: Bumped when the store's contents change (a save, a delete), so lists refresh.
    store_changed = AnyTrait(None)
    #: The photo set corrections go to and fine-tuning reads (see jupyter_cifar.photos).
    photo_set = Unicode("my-photos")
    #: Bumped when a photo set changes (a correction kept), so counts refresh.
    photos_changed = AnyTrait(None)

    def __init__(self, *, store_uri: str | None = None, data: str | None = None) -> None:
        super().__init__()
        self.store_uri = store_uri
        self.data_source = data
        self.model: keras.Model | None = None
        self.record: ModelRecord | None = None  # the stored version the model is, if any
        self.history: list[dict[str, Any]] = []  # its per-epoch history (for Continue)
        #: What the model was trained with, as far as known: preset, batch_size, learning_rate.
        self.recipe: dict[str, Any] = {}
        #: The stored version a training from this model continues: the record's own ref, or, for a
        #: model trained here and not saved yet, the version its training started from (None: none).
        self.origin: str | None = None
        self.class_names: list[str] | None = None
        #: How the model classifies photos (its stored version's views, else the default).
        self.view_plan: ViewPlan = DEFAULT_PLAN
        self._store: ModelStore | None = None
        self._data: Dataset | None = None
        self._jobs: JobClient | None = None
        self._photos: PhotoStore | None = None
        self._jobs_known = False  # asked the server once
        # One lock each: decoding the data the first time takes seconds, and must not hold up the store.
        self._store_lock = threading.Lock()
        self._data_lock = threading.Lock()
        self._jobs_lock = threading.Lock()
        self._photos_lock = threading.Lock()

    # -- lazily opened resources -----------------------------------------------------------------
    def store(self) -> ModelStore:
        """The model store (see ``jupyter_cifar.store.default_store_uri`` for which one)."""
        with self._store_lock:
            if self._store is None:
                from ..store import open_store

                self._store = open_store(self.store_uri)
            return self._store

    def data(self, progress: Callable[[str], None] | None = None) -> Dataset:
        """CIFAR-10 (decoded once, then cached on disk and here)."""
        with self._data_lock:
            if self._data is None:
                from ..engine.data import load_cifar10

                self._data = load_cifar10(self.data_source, progress=progress)
            return self._data

    def photos(self) -> PhotoStore:
        """The photo sets kept beside the store's models (opened once)."""
        store = self.store()
        with self._photos_lock:
            if self._photos is None:
                from ..photos.store import open_photo_store

                self._photos = open_photo_store(store)
            return self._photos

    def loaded_data(self) -> Dataset | None:
        """CIFAR-10 if it is loaded already (nothing is loaded for asking)."""
        return self._data

    def jobs(self) -> JobClient | None:
        """The training jobs of the Jupyter server the store is, when that server runs them (its
        ``status`` says so); None for any other store, where training runs in this kernel."""
        from ..store.remote import RemoteModelStore

        store = self.store()
        if not isinstance(store, RemoteModelStore):
            return None
        with self._jobs_lock:
            if not self._jobs_known:
                from ..jobs.client import RemoteJobClient

                info = store.status().get("jobs")
                if isinstance(info, dict) and info.get("runs"):
                    self._jobs = RemoteJobClient(store)
                self._jobs_known = True
            return self._jobs

    # -- the model in hand -----------------------------------------------------------------------
    def set_model(
        self,
        model: keras.Model,
        *,
        record: ModelRecord | None = None,
        history: list[dict[str, Any]] | None = None,
        label: str | None = None,
        class_names: list[str] | None = None,
        recipe: dict[str, Any] | None = None,
        origin: str | None = None,
    ) -> None:
        """Put a model in hand: a stored version (``record``), or one trained here (``recipe`` and
        ``origin``, the version its training started from, say where it came from)."""
        meta = record.metadata if record is not None else {}
        self.model = model
        self.record = record
        self.history = list(history or _stored_history(meta.get("history")))
        self.class_names = class_names or _stored_class_names(meta.get("class_names"))
        self.recipe = dict(recipe) if recipe is not None else _stored_recipe(meta)
        self.view_plan = stored_plan(meta)
        self.origin = record.ref if record is not None else origin
        if label is None:
            label = record.ref if record is not None else model.name
            accuracy = record.test_accuracy if record is not None else None
            if accuracy is not None:
                label += f" (test accuracy {accuracy:.4f})"
        self.model_label = label
        self.model_changed = object()

    def notify_store_changed(self) -> None:
        self.store_changed = object()

    def close(self) -> None:
        with self._photos_lock:
            if self._photos is not None:
                self._photos.close()
                self._photos = None
        with self._store_lock:
            if self._store is not None:
                self._store.close()
                self._store = None


# A stored version's metadata is whatever JSON its saver sent (the API takes any): only the shapes the
# engine relies on are used, anything else is as if it were absent.


def _stored_history(value: Any) -> list[dict[str, Any]]:
    """A stored per-epoch history, if it is one (rows with whole epoch numbers), else none."""
    if isinstance(value, list) and all(
        isinstance(row, dict) and isinstance(row.get("epoch"), int) and not isinstance(row["epoch"], bool)
        for row in value
    ):
        return value
    return []


def _stored_class_names(value: Any) -> list[str] | None:
    """Stored class names, if they are a list of text, else None (the CIFAR-10 names are used)."""
    if isinstance(value, list) and value and all(isinstance(name, str) for name in value):
        return value
    return None


def _stored_recipe(meta: dict[str, Any]) -> dict[str, Any]:
    """The preset, batch size and learning rate a stored version was trained with, where its metadata
    says so in the shapes the trainer writes (an imported model has none)."""
    from ..engine.nets import PRESETS

    recipe: dict[str, Any] = {}
    if isinstance(meta.get("preset"), str) and meta["preset"] in PRESETS:
        recipe["preset"] = meta["preset"]
    hyper = meta.get("hyperparameters")
    if isinstance(hyper, dict):
        batch, rate = hyper.get("batch_size"), hyper.get("learning_rate")
        if isinstance(batch, int) and not isinstance(batch, bool) and batch > 0:
            recipe["batch_size"] = batch
        if isinstance(rate, int | float) and not isinstance(rate, bool) and rate > 0:
            recipe["learning_rate"] = float(rate)
    return recipe
