"""``jupyter cifar``: train, evaluate and classify from scripts and headless machines.

Scripts rely on what this prints: with ``--json`` exactly one JSON document goes to stdout (progress goes
to stderr), errors are one line on stderr naming what was wrong, and the exit status says what happened:

    0  all done
    1  some inputs could not be handled (each named in the output; the rest were done); for
       ``models check``: problems found (without --repair) or damage left that cannot be repaired
    2  bad usage or a bad parameter
    3  the model store could not be reached
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from . import __version__
from .errors import BadParameter, DataError, JupyterCifarError, ModelFileError, NotFound, StoreUnavailable

PROG = "jupyter cifar"
STORE_REF_HELP = "a version in the store: NAME (its latest), NAME:VERSION or NAME@ALIAS"
REF_HELP = STORE_REF_HELP + "; or the path of a .keras / .h5 file"
EXIT_OK, EXIT_PARTIAL, EXIT_USAGE, EXIT_STORE = 0, 1, 2, 3


class UsageError(Exception):
    """Bad usage: the message is printed as one line and the exit status is 2."""


class _Parser(argparse.ArgumentParser):
    """argparse, but its errors are one line on stderr (no usage dump) and exit 2."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: error: {message}")


def _count(text: str) -> int:
    """A whole number of at least 1, for --epochs, --batch-size and the like."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1 (got {value})")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number (got {text})")
    return value


def build_parser() -> argparse.ArgumentParser:
    from .nets import DEFAULT_PRESET, PRESETS

    parser = _Parser(prog=PROG, description="Train, evaluate and classify CIFAR-10 image classifiers.")
    parser.add_argument("--version", action="version", version=f"jupyter_cifar {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--json", action="store_true", help="print one JSON document on stdout")

    def store_arg(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--store",
            metavar="URI",
            help="model store: a folder, mongodb:// or mongodb+srv:// URI; "
            "default: $JUPYTER_CIFAR_STORE, else the embedded store under Jupyter's data dir",
        )

    def data_arg(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--data",
            metavar="DIR",
            help="CIFAR-10 folder (image folder, cifar-10-batches-py, or a cache .npz); "
            "default: $JUPYTER_CIFAR_DATA, else the official download",
        )

    train = sub.add_parser("train", help="train a network on CIFAR-10")
    train.add_argument("--preset", default=DEFAULT_PRESET, choices=list(PRESETS), help="network and recipe")
    train.add_argument("--epochs", type=_count, metavar="N", help="default: the preset's")
    train.add_argument("--batch-size", type=_count, metavar="N", help="default: the preset's")
    train.add_argument("--learning-rate", type=_positive_float, metavar="LR")
    train.add_argument("--train-limit", type=_count, metavar="N", help="train on N images")
    train.add_argument("--test-limit", type=_count, metavar="N", help="evaluate on N images")
    train.add_argument("--seed", type=int, help="make the run repeatable")
    train.add_argument(
        "--from",
        dest="parent",
        metavar="REF",
        help="train this model further (a stored version or a file) instead of a new network; "
        "saved with --save NAME, its parent is REF",
    )
    train.add_argument(
        "--save", metavar="NAME", help="save the model as the next version of NAME (or to a PATH.keras file)"
    )
    train.add_argument("--tag", action="append", default=[], metavar="KEY=VALUE", help="with --save NAME")
    train.add_argument("--notes", default="", help="with --save NAME")
    train.add_argument(
        "--detach",
        action="store_true",
        help="queue it as a job on the Jupyter server (--store http(s)://…) and return: it runs there, "
        "outliving this command; follow it with `jupyter cifar jobs watch ID`",
    )
    data_arg(train)
    store_arg(train)
    common(train)

    evaluate = sub.add_parser("evaluate", help="test a model on CIFAR-10's test images, or on your photos")
    evaluate.add_argument("ref", metavar="REF", help=REF_HELP)
    evaluate.add_argument("--test-limit", type=_count, metavar="N", help="evaluate on N images")
    evaluate.add_argument(
        "--photos",
        metavar="SET_OR_DIR",
        help="evaluate on these photos instead: a photo set of the store, or a folder with one sub-folder "
        "per class",
    )
    data_arg(evaluate)
    store_arg(evaluate)
    common(evaluate)

    classify = sub.add_parser("classify", help="classify image files with a model")
    classify.add_argument("ref", metavar="REF", help=REF_HELP)
    classify.add_argument("inputs", nargs="+", metavar="FILE_OR_DIR", help="images or folders")
    classify.add_argument("--top", type=_count, default=3, metavar="K", help="labels per image")
    classify.add_argument(
        "--explain",
        metavar="OUT_DIR",
        help="also write, for each image, where the model saw its top label (a Grad-CAM heatmap over the "
        "photo, OUT_DIR/<name>.gradcam.png)",
    )
    store_arg(classify)
    common(classify)

    from .jobs import cli as jobs_cli
    from .photos import cli as photos_cli
    from .store import cli as models_cli

    models_cli.add_parser(sub, common, store_arg)
    jobs_cli.add_parser(sub, common, store_arg)
    photos_cli.add_parsers(sub, common, store_arg, data_arg, _Parser)
    return parser


# -- commands ------------------------------------------------------------------------------------


def _train(args: argparse.Namespace, out: _Output) -> int:
    tags = _parse_tags(args.tag)
    if args.detach:
        from .jobs.cli import detach

        return detach(args, out, tags)
    store = None
    if args.save is not None and not _is_file_ref(args.save):
        from .store.records import check_name

        check_name(args.save, "--save")
        store = _open_store(args.store)  # an unreachable store fails now, not after training
        store.list(limit=1)
    elif args.save is not None and Path(args.save).suffix != ".keras":
        raise BadParameter("--save", f"a file path must end in .keras (got {args.save!r})")
    data = _load_data(args.data, out)
    _import_keras_quietly()
    from .training import TrainConfig, Trainer

    config = TrainConfig(
        preset=args.preset,
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        train_limit=args.train_limit,
        test_limit=args.test_limit,
        seed=args.seed,
    )
    if args.parent:
        model, history, parent, _ = _training_from(args.parent, args.store, data.class_names)
        trainer = Trainer(data, config, model=model, history=history, parent=parent)
    else:
        trainer = Trainer(data, config)
    with _ProgressBar(out) as bar:
        trainer.subscribe(bar.on_event)
        result = _run_interruptibly(trainer, out)
    if result.status == "failed":
        raise JupyterCifarError(f"training failed: {result.error}")
    saved, version = None, None
    if store is not None:
        record = store.save(result.model, args.save, metadata=result.metadata(), tags=tags, notes=args.notes)
        saved, version = record.name, record.version
    elif args.save:
        from .modelfiles import save_model

        saved = str(save_model(result.model, args.save))
    ev = result.evaluation
    assert ev is not None
    out.result(
        {
            "name": saved,
            "version": version,
            "test_accuracy": ev.accuracy,
            "epochs": result.epochs,
            "seconds": round(result.seconds, 3),
            "images_per_second": round(result.images_per_second, 1),
            "status": result.status,
            "preset": result.config.preset,
            "seed": result.config.seed,
        },
        lambda r: (
            f"{r['status']}: {r['epochs']} epochs of {r['preset']} in {r['seconds']:.1f} s "
            f"({r['images_per_second']:.0f} images/s); test accuracy {r['test_accuracy']:.4f}"
            + (f"; saved as {saved}:{version}" if version else f"; saved to {saved}" if saved else "")
        ),
    )
    return EXIT_OK


def _evaluate(args: argparse.Namespace, out: _Output) -> int:
    from .predict import evaluate

    model, views = _load_ref_and_views(args.ref, args.store)
    if args.photos is not None:
        from .photos.cli import evaluate_photos_command

        return evaluate_photos_command(args, out, model, views)
    data = _load_data(args.data, out).subset(None, args.test_limit)
    ev = evaluate(model, data.x_test, data.y_test, data.class_names)
    out.result(
        {"accuracy": ev.accuracy, "n": ev.n, "per_class": ev.per_class},
        lambda r: "\n".join(
            [f"accuracy {r['accuracy']:.4f} on {r['n']} test images"]
            + [f"  {name:<12} {acc:.4f}" for name, acc in r["per_class"].items()]
        ),
    )
    return EXIT_OK


def _classify(args: argparse.Namespace, out: _Output) -> int:
    from .predict import classify

    model, views = _load_ref_and_views(args.ref, args.store)
    files = expand_inputs(args.inputs)
    # A missing or unreadable file gets its own error; a photo is seen through its version's views.
    items = classify(model, files, top=args.top, plan=views)
    results = [c.to_json() for c in items]
    if args.explain is not None:
        from .data import CLASS_NAMES
        from .explain import write_overlays

        # The class each card answered (several views of a photo, combined), explained on the whole photo.
        answered = [CLASS_NAMES.index(c.top[0]["label"]) if c.ok else 0 for c in items]
        written_files = write_overlays(model, files, args.explain, class_index=answered)
        for item, (_, written) in zip(results, written_files, strict=True):
            item["explanation"] = str(written) if isinstance(written, Path) else None
    out.result(
        results,
        lambda r: "\n".join(
            f"{c['file']}: "
            + (
                ", ".join(f"{t['label']} {t['probability']:.2f}" for t in c["top"])
                + (f" (why: {c['explanation']})" if c.get("explanation") else "")
                if c["ok"]
                else f"error: {c['error']}"
            )
            for c in r
        ),
    )
    return EXIT_OK if all(c.ok for c in items) else EXIT_PARTIAL


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


# -- helpers -------------------------------------------------------------------------------------


def _load_data(data: str | None, out: _Output) -> Any:
    from .data import load_cifar10

    try:
        return load_cifar10(data, progress=out.note)
    except DataError as e:
        raise BadParameter("--data", str(e)) from None


def _training_from(
    ref: str, store_uri: str | None, class_names: Sequence[str], param: str = "--from"
) -> tuple[Any, list[Any], str | None, str | None]:
    """``train --from REF`` (and ``finetune REF``): the model, its history so far, its parent REF (None
    for a file) and the preset it was trained with (None when unknown); a model that cannot be trained on
    CIFAR-10 is refused, saying why."""
    history: list[Any] = []
    parent = preset = None
    if _is_file_ref(ref):
        model = _load_ref(ref, store_uri)
    else:
        store = _open_store(store_uri)
        record = store.resolve(ref)  # an unknown REF fails before TensorFlow loads
        _import_keras_quietly()
        model = store.load(record.ref)
        parent = record.ref
        stored = record.metadata.get("history")
        history = list(stored) if isinstance(stored, list) else []
        stored_preset = record.metadata.get("preset")
        preset = stored_preset if isinstance(stored_preset, str) else None
        names = record.metadata.get("class_names")
        if isinstance(names, list) and names and list(names) != list(class_names):
            raise BadParameter(param, f"{record.ref} classifies {len(names)} other classes than CIFAR-10's")
    from .training import why_not_trainable

    why = why_not_trainable(model, len(class_names))
    if why is not None:
        raise BadParameter(param, f"{ref}: {why}")
    return model, history, parent, preset


def _is_file_ref(ref: str) -> bool:
    """A REF is a file when it names an existing file, a path, or ends like a model file."""
    return Path(ref).is_file() or os.sep in ref or ref.endswith((".keras", ".h5"))


def _load_ref(ref: str, store_uri: str | None) -> Any:
    return _load_ref_and_views(ref, store_uri)[0]


def _load_ref_and_views(ref: str, store_uri: str | None) -> tuple[Any, Any]:
    """The model REF names and the views it classifies photos with (a stored version's own,
    views.stored_plan; the default for a file), the version resolved once."""
    from .modelfiles import load_model, sniff_format
    from .views import DEFAULT_PLAN, stored_plan

    if not _is_file_ref(ref):
        store = _open_store(store_uri)
        record = store.resolve(ref)  # an unknown REF fails before TensorFlow loads
        _import_keras_quietly()
        return store.load(record.ref), stored_plan(record.metadata)
    try:
        sniff_format(Path(ref))  # a missing or foreign file fails before TensorFlow loads
        _import_keras_quietly()
        return load_model(ref), DEFAULT_PLAN
    except ModelFileError as e:
        raise BadParameter("REF", str(e)) from None


def _open_store(uri: str | None) -> Any:
    from .store import open_store

    return open_store(uri)


def _parse_tags(items: Sequence[str]) -> dict[str, str | None]:
    """KEY=VALUE arguments; ``KEY=`` (empty value) means remove that tag."""
    tags: dict[str, str | None] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise BadParameter("tag", f"{item!r}: write tags as KEY=VALUE")
        tags[key] = value or None
    return tags


def _run_interruptibly(trainer: Any, out: _Output) -> Any:
    """First Ctrl-C stops after the current batch (the model is still evaluated and saved)."""

    def on_sigint(signum: int, frame: object) -> None:
        if trainer.stopping:
            raise KeyboardInterrupt
        out.note("stopping after this batch (Ctrl-C again to abort)")
        trainer.stop()

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        trainer.start()
        while (result := trainer.wait(0.2)) is None:
            pass
        return result
    finally:
        signal.signal(signal.SIGINT, previous)


class _Output:
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


class _ProgressBar:
    """Training progress on stderr: a live bar on a terminal, one line per epoch otherwise."""

    def __init__(self, out: _Output) -> None:
        self.out = out
        self.bar: Any = None
        self.tty = sys.stderr.isatty()

    def __enter__(self) -> _ProgressBar:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.close()

    def on_event(self, event: dict[str, Any]) -> None:
        kind = event["type"]
        if kind == "start":
            self.out.note(
                f"training {event['preset']} on {event['n_train']} images, "
                f"{event['epochs']} epochs of {event['batches_per_epoch']} batches "
                f"(batch {event['batch_size']}, seed {event['seed']})"
            )
            if self.tty:
                from tqdm import tqdm

                self.bar = tqdm(
                    total=event["epochs"] * event["batches_per_epoch"],
                    unit="batch",
                    file=sys.stderr,
                    mininterval=0.2,
                    dynamic_ncols=True,
                )
        elif kind == "batch" and self.bar is not None:
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


def _import_keras_quietly() -> None:
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


def _models(args: argparse.Namespace, out: _Output) -> int:
    from .store.cli import run

    return run(args, out)


def _jobs(args: argparse.Namespace, out: _Output) -> int:
    from .jobs.cli import run

    return run(args, out)


def _photos(args: argparse.Namespace, out: _Output) -> int:
    from .photos.cli import run_photos

    return run_photos(args, out)


def _finetune(args: argparse.Namespace, out: _Output) -> int:
    from .photos.cli import finetune_command

    return finetune_command(args, out)


COMMANDS = {
    "train": _train,
    "evaluate": _evaluate,
    "classify": _classify,
    "models": _models,
    "jobs": _jobs,
    "photos": _photos,
    "finetune": _finetune,
}


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up chatter, not ours
    prog = PROG
    try:
        args = build_parser().parse_args(argv)
        prog = " ".join(
            [PROG, args.command, *([args.verb] if args.command in ("models", "jobs", "photos") else [])]
        )
        return COMMANDS[args.command](args, _Output(args.json))
    except UsageError as e:
        print(e, file=sys.stderr)
        return EXIT_USAGE
    except (BadParameter, NotFound) as e:  # NotFound: a REF or job id that names nothing
        print(f"{prog}: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except StoreUnavailable as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return EXIT_STORE
    except JupyterCifarError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return EXIT_PARTIAL
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
