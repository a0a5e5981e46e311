"""What every ``jupyter cifar`` command shares: its exit statuses, argument types and common options,
how results and progress are printed, and how a REF, the data and the store are opened.

The commands live with what they drive (:mod:`jupyter_cifar.cli` for ``train``, ``evaluate`` and
``classify``; ``store/cli.py``, ``jobs/cli.py``, ``photos/cli.py``); each imports what it needs from here,
lazily where it would pull in TensorFlow.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from .engine.history import epochs_text
from .errors import BadParameter, DataError, ModelFileError

PROG = "jupyter cifar"
STORE_REF_HELP = "a version in the store: NAME (its latest), NAME:VERSION or NAME@ALIAS"
REF_HELP = STORE_REF_HELP + "; or the path of a .keras / .h5 file"
EXIT_OK, EXIT_PARTIAL, EXIT_USAGE, EXIT_STORE = 0, 1, 2, 3


class UsageError(Exception):
    """Bad usage: the message is printed as one line and the exit status is 2."""


class Parser(argparse.ArgumentParser):
    """argparse, but its errors are one line on stderr (no usage dump) and exit 2."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: error: {message}")


def count(text: str) -> int:
    """A whole number of at least 1, for --epochs, --batch-size and the like."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1 (got {value})")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number (got {text})")
    return value


def add_json_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print one JSON document on stdout")


def add_store_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--store",
        metavar="URI",
        help="model store: a folder, a mongodb:// or mongodb+srv:// URI, or a Jupyter server's "
        "http(s)://HOST:PORT/?token=…; default: $JUPYTER_CIFAR_STORE, else the embedded store under "
        "Jupyter's data dir",
    )


def add_data_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data",
        metavar="DIR",
        help="CIFAR-10 folder (image folder, cifar-10-batches-py, or a cache .npz); "
        "default: $JUPYTER_CIFAR_DATA, else the official download",
    )


def expand_inputs(inputs: Sequence[str]) -> list[Path]:
    """Files in the order given; a folder becomes its (non-hidden) files, sorted by name."""
    files: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            files.extend(sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")))
        else:
            files.append(path)
    return files


def load_data(data: str | None, out: Output) -> Any:
    from .engine.data import load_cifar10

    try:
        return load_cifar10(data, progress=out.note)
    except DataError as e:
        raise BadParameter("--data", str(e)) from None


def training_from(
    ref: str, store_uri: str | None, class_names: Sequence[str], param: str = "--from"
) -> tuple[Any, list[Any], str | None, str | None]:
    """``train --from REF`` (and ``finetune REF``): the model, its history so far, its parent REF (None
    for a file) and the preset it was trained with (None when unknown); a model that cannot be trained on
    CIFAR-10 is refused, saying why."""
    history: list[Any] = []
    parent = preset = None
    if is_file_ref(ref):
        model = load_ref(ref, store_uri)
    else:
        from .store import open_store

        store = open_store(store_uri)
        record = store.resolve(ref)  # an unknown REF fails before TensorFlow loads
        import_keras_quietly()
        model = store.load(record.ref)
        parent = record.ref
        stored = record.metadata.get("history")
        history = list(stored) if isinstance(stored, list) else []
        stored_preset = record.metadata.get("preset")
        preset = stored_preset if isinstance(stored_preset, str) else None
        names = record.metadata.get("class_names")
        if isinstance(names, list) and names and list(names) != list(class_names):
            raise BadParameter(param, f"{record.ref} classifies {len(names)} other classes than CIFAR-10's")
    from .engine.training import why_not_trainable

    why = why_not_trainable(model, len(class_names))
    if why is not None:
        raise BadParameter(param, f"{ref}: {why}")
    return model, history, parent, preset


def is_file_ref(ref: str) -> bool:
    """A REF is a file when it names an existing file, a path, or ends like a model file."""
    return Path(ref).is_file() or os.sep in ref or ref.endswith((".keras", ".h5"))


def load_ref(ref: str, store_uri: str | None) -> Any:
    return load_ref_and_views(ref, store_uri)[0]


def load_ref_and_views(ref: str, store_uri: str | None) -> tuple[Any, Any]:
    """The model REF names and the views it classifies photos with (a stored version's own,
    views.stored_plan; the default for a file), the version resolved once."""
    from .engine.modelfiles import load_model, sniff_format
    from .engine.views import DEFAULT_PLAN, stored_plan

    if not is_file_ref(ref):
        from .store import open_store

        store = open_store(store_uri)
        record = store.resolve(ref)  # an unknown REF fails before TensorFlow loads
        import_keras_quietly()
        return store.load(record.ref), stored_plan(record.metadata)
    try:
        sniff_format(Path(ref))  # a missing or foreign file fails before TensorFlow loads
        import_keras_quietly()
        return load_model(ref), DEFAULT_PLAN
    except ModelFileError as e:
        raise BadParameter("REF", str(e)) from None


def parse_tags(items: Sequence[str]) -> dict[str, str | None]:
    """KEY=VALUE arguments, checked as the store checks them (so a bad one fails before any work);
    ``KEY=`` (an empty value) means remove that tag."""
    from .store.records import check_tags

    tags: dict[str, str | None] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise BadParameter("tag", f"{item!r}: write tags as KEY=VALUE")
        tags[key] = value or None
    return check_tags(tags)


def tags_to_set(items: Sequence[str]) -> dict[str, str]:
    """KEY=VALUE arguments for a new version, a job or a filter, where ``KEY=`` has nothing to remove."""
    return {key: value for key, value in parse_tags(items).items() if value is not None}


class Output:
    """Where results and notes go: JSON or text on stdout, notes on stderr."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json

    def result(self, value: Any, as_text: Any) -> None:
        if self.as_json:
            json.dump(value, sys.stdout, indent=2)
            sys.stdout.write("\n")
        else:
            print(as_text(value))
        sys.stdout.flush()

    def note(self, message: str) -> None:
        print(message, file=sys.stderr, flush=True)


class ProgressBar:
    """Training progress on stderr: a live bar on a terminal, one line per epoch otherwise."""

    def __init__(self, out: Output) -> None:
        self.out = out
        self.bar: Any = None
        self.tty = sys.stderr.isatty()
        self.budget: float | None = None  # seconds, for a run with a time budget

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.close()

    def on_event(self, event: dict[str, Any]) -> None:
        kind = event["type"]
        if kind == "start":
            minutes = event.get("minutes")
            length = f"for {minutes:g} minutes" if minutes else epochs_text(event["epochs"])
            said = [f"batch {event['batch_size']}", f"seed {event['seed']}"]
            said += [event["precision"]] if event.get("precision") else []  # a job's older events lack it
            from .engine.precision import kernels_text, machine_text

            where = f" on {machine_text(event['machine'])}" if event.get("machine") else ""
            self.out.note(
                f"training {event['preset']} on {event['n_train']} images, "
                f"{length} of {event['batches_per_epoch']} batches ({', '.join(said)}){where}"
            )
            if event.get("kernels"):
                self.out.note(f"3x3 convolutions' kernels: {kernels_text(event['kernels'])}")
            if self.tty:
                from tqdm import tqdm

                # A time budget's bar counts seconds; an epoch count's, batches.
                self.budget = minutes * 60 if minutes else None
                self.bar = tqdm(
                    total=self.budget or event["epochs"] * event["batches_per_epoch"],
                    unit="s" if minutes else "batch",
                    file=sys.stderr,
                    mininterval=0.2,
                    dynamic_ncols=True,
                )
        elif kind == "batch" and self.bar is not None:
            if self.budget:
                self.bar.update(round(event["done"] * self.budget) - self.bar.n)
            else:
                self.bar.update(1)
            self.bar.set_postfix(
                epoch=event["epoch"],
                loss=event["loss"],
                acc=event["accuracy"],
                img_s=event["images_per_second"],
                refresh=False,
            )
        elif kind == "epoch":
            line = (
                f"epoch {event['epoch']}: loss {event['loss']:.4f} accuracy {event['accuracy']:.4f}"
                + (f" val_accuracy {event['val_accuracy']:.4f}" if event["val_accuracy"] is not None else "")
                + f" ({event['seconds']:.1f} s)"
            )
            if self.bar is not None:
                self.bar.write(line, file=sys.stderr)
            else:
                self.out.note(line)


def import_keras_quietly() -> None:
    """Import Keras (and TensorFlow) with file descriptor 2 parked, then restore it.

    TensorFlow's C++ start-up lines ("All log messages before absl::InitializeLog()", oneDNN notices)
    ignore TF_CPP_MIN_LOG_LEVEL; on a command line whose stderr carries our one-line errors they are
    noise. What the import printed is shown if the import fails.
    """
    if "keras" in sys.modules:
        return
    import tempfile

    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as parked:
        os.dup2(parked.fileno(), 2)
        try:
            import keras  # noqa: F401
        except BaseException:
            os.dup2(saved, 2)
            parked.seek(0)
            sys.stderr.write(parked.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)
