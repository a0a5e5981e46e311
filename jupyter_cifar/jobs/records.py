"""What a job is: its spec (what to train), its record (where it stands), and the states it moves through.

A job is a training run the Jupyter server owns. Its record lives in the store beside the models
(:class:`~jupyter_cifar.jobs.store.JobStore`), the one source of truth; an executor only runs it. A spec
never carries credentials: whoever runs a job reads the store from its own configuration.

States::

    queued ──> running ──> finished
      │           │ ╲────> failed
      │           ├──> stopping ──> stopped
      │           ╰──> interrupted (its process stopped heartbeating) ──resume──> queued
      ╰──> stopped (a stop before it ran)
"""

from __future__ import annotations

import math
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any

from ..engine.budget import check_minutes, minutes_text
from ..engine.precision import machine_text
from ..errors import BadParameter
from ..store.records import Ref, check_name, check_notes, check_tags

STATES = ("queued", "running", "stopping", "finished", "stopped", "failed", "interrupted")
ACTIVE = ("queued", "running", "stopping")  # not ended: a process runs it, or will
ENDED = ("finished", "stopped", "failed", "interrupted")
RESUMABLE = ("interrupted", "stopped", "failed")
MAX_EPOCHS = 1000

_SPEC_FIELDS = (
    "preset",
    "epochs",
    "minutes",
    "batch_size",
    "learning_rate",
    "train_limit",
    "test_limit",
    "seed",
    "precision",
    "data",
    "save",
    "tags",
    "notes",
    "parent",
    "photos",
)


@dataclass(frozen=True)
class JobSpec:
    """What to train: a preset's network (or ``parent``, a stored version to continue) and how, and the
    name to save the result under. ``None``: the preset's own value (or, for ``save``, ``job-<id>``)."""

    preset: str | None = None
    epochs: int | None = None
    minutes: float | None = None  # train for this long instead of for epochs (not with epochs)
    batch_size: int | None = None
    learning_rate: float | None = None
    train_limit: int | None = None
    test_limit: int | None = None
    seed: int | None = None
    precision: str | None = None  # a Keras dtype policy or "auto" (engine.precision)
    data: str | None = None  # the worker's CIFAR-10 folder; None: its own configuration
    save: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    notes: str = ""
    parent: str | None = None  # a REF to continue training from
    photos: str | None = None  # a photo set: fine-tune ``parent`` on it (jupyter_cifar.photos.finetune)

    @classmethod
    def from_json(cls, value: Any) -> JobSpec:
        """A spec from untrusted JSON: every field checked, ``BadParameter`` naming the first bad one."""
        from ..engine.nets import PRESETS
        from ..engine.precision import PRECISIONS

        if not isinstance(value, dict):
            raise BadParameter("spec", "must be a JSON object")
        unknown = sorted(set(value) - set(_SPEC_FIELDS))
        if unknown:
            raise BadParameter("spec", f"unknown fields {unknown} (known: {', '.join(_SPEC_FIELDS)})")
        preset = value.get("preset")
        if preset is not None and (not isinstance(preset, str) or preset not in PRESETS):
            raise BadParameter("preset", f"{str(preset)[:40]!r} is not a preset ({', '.join(PRESETS)})")
        for name, low, high in (
            ("epochs", 1, MAX_EPOCHS),
            ("batch_size", 1, 65536),
            ("train_limit", 1, 10**9),
            ("test_limit", 1, 10**9),
            ("seed", 0, 2**31 - 1),
        ):
            number = value.get(name)
            if number is not None and (
                not isinstance(number, int) or isinstance(number, bool) or not low <= number <= high
            ):
                raise BadParameter(
                    name, f"must be a whole number from {low} to {high} (got {str(number)[:40]!r})"
                )
        minutes = value.get("minutes")
        if minutes is not None:
            minutes = check_minutes(minutes, "minutes")
            if value.get("epochs") is not None:
                raise BadParameter("minutes", "give either epochs or minutes, not both")
            if value.get("photos") is not None:
                raise BadParameter("minutes", "a fine-tuning on photos trains for epochs")
        rate = value.get("learning_rate")
        if rate is not None and (
            not isinstance(rate, int | float)
            or isinstance(rate, bool)
            or not math.isfinite(rate)
            or rate <= 0
        ):
            raise BadParameter("learning_rate", f"must be a positive number (got {str(rate)[:40]!r})")
        precision = value.get("precision")
        if precision is not None and precision not in PRECISIONS:
            raise BadParameter(
                "precision", f"must be one of {', '.join(PRECISIONS)} (got {str(precision)[:40]!r})"
            )
        data = value.get("data")
        if data is not None and (not isinstance(data, str) or not data or len(data) > 4096 or "\x00" in data):
            raise BadParameter("data", "must be the path of a CIFAR-10 folder as the worker sees it")
        save = value.get("save")
        if save is not None:
            check_name(save, "save")
        tags = value.get("tags") or {}
        if not isinstance(tags, dict):
            raise BadParameter("tags", "must be an object of KEY: VALUE")
        clean_tags = {k: v for k, v in check_tags(tags).items() if v is not None}
        notes = check_notes(value.get("notes") or "")
        parent = value.get("parent")
        if parent is not None:
            parent = str(Ref.parse(parent))  # BadParameter("REF", …) for a bad one
        photos = value.get("photos")
        if photos is not None:
            check_name(photos, "photos")
            if parent is None:
                raise BadParameter(
                    "photos", "fine-tuning on a photo set needs the version to start from (parent)"
                )
        return cls(
            preset=preset,
            epochs=value.get("epochs"),
            minutes=minutes,
            batch_size=value.get("batch_size"),
            learning_rate=float(rate) if rate is not None else None,
            train_limit=value.get("train_limit"),
            test_limit=value.get("test_limit"),
            seed=value.get("seed"),
            precision=precision,
            data=data,
            save=save,
            tags=clean_tags,
            notes=notes,
            parent=parent,
            photos=photos,
        )

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def describe_spec(spec: dict[str, Any]) -> str:
    """What a job trains, in a few words: "fast, 3 epochs, 2,000 images", "balanced, 9 minutes" or
    "more of fast-run:2"."""
    what = f"more of {spec['parent']}" if spec.get("parent") else (spec.get("preset") or "default network")
    parts = [what]
    if spec.get("epochs"):
        parts.append(f"{spec['epochs']} epoch" + ("s" if spec["epochs"] != 1 else ""))
    if spec.get("minutes"):
        parts.append(minutes_text(spec["minutes"]))
    if spec.get("train_limit"):
        parts.append(f"{spec['train_limit']:,} images")
    return ", ".join(parts)


def describe_worker(worker: Any) -> str:
    """Where a job ran, in a few words: "on box-7: AMD EPYC, family 25 model 1 at 2.4 GHz (avx2), 2 cores"
    ("" before a runner claimed it). A record read back is whatever JSON was stored: a field of the wrong
    shape is left out."""
    if not isinstance(worker, dict) or not isinstance(worker.get("machine"), dict):
        return ""
    host = worker.get("host")
    where = f"{host}: " if isinstance(host, str) and host else ""
    return f"on {where}{machine_text(worker['machine'])}"


@dataclass
class JobRecord:
    """Where a job stands: the JSON of the API and the CLI (``to_json``), plus what only runners use."""

    id: str
    state: str
    spec: JobSpec
    created: str
    started: str | None = None
    ended: str | None = None
    executor: str = "local"
    worker: dict[str, Any] | None = None  # {"host", "pid", "address", "machine"}; address None on the local
    # executor; machine: precision.machine's facts
    progress: dict[str, Any] = field(default_factory=dict)  # epoch, epochs, batch, batches, images/s, ETA
    model: str | None = None  # the saved version's REF
    test_accuracy: float | None = None
    error: str | None = None
    events: int = 0  # how many events it has published (numbered 1..events)
    owner: str | None = None  # the token of the process that runs it now
    heartbeat: float | None = None  # when that process last said it runs (epoch seconds)
    stop_requested: bool = False
    attempt: int = 0  # how many times a process has claimed it (a resume claims it again)

    def to_json(self) -> dict[str, Any]:
        progress = self.progress
        return {
            "id": self.id,
            "state": self.state,
            "spec": self.spec.to_json(),
            "epoch": progress.get("epoch"),
            "epochs": progress.get("epochs", self.spec.epochs),
            "progress": progress.get("fraction", 1.0 if self.state == "finished" else 0.0),
            "images_per_second": progress.get("images_per_second"),
            "eta_seconds": progress.get("eta_seconds"),
            "created": self.created,
            "started": self.started,
            "ended": self.ended,
            "executor": self.executor,
            "worker": self.worker,
            "model": self.model,
            "test_accuracy": self.test_accuracy,
            "error": self.error,
            "events": self.events,
        }

    def to_doc(self) -> dict[str, Any]:
        """Everything, as stored."""
        return {**asdict(self), "spec": self.spec.to_json()}

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> JobRecord:
        fields = {k: v for k, v in doc.items() if k in cls.__dataclass_fields__}
        spec = doc.get("spec") or {}
        return cls(**{**fields, "spec": JobSpec(**{k: v for k, v in spec.items() if k in _SPEC_FIELDS})})


def new_job_id() -> str:
    return uuid.uuid4().hex[:16]


def check_job_id(value: object) -> str:
    if not isinstance(value, str) or len(value) != 16 or any(c not in "0123456789abcdef" for c in value):
        raise BadParameter("job", f"{str(value)[:40]!r} is not a job id (16 hexadecimal digits)")
    return value
