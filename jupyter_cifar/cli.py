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
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import __version__
from .cli_common import (
    EXIT_OK,
    EXIT_PARTIAL,
    EXIT_STORE,
    EXIT_USAGE,
    PROG,
    REF_HELP,
    Output,
    Parser,
    ProgressBar,
    UsageError,
    add_data_arg,
    add_json_arg,
    add_store_arg,
    count,
    expand_inputs,
    import_keras_quietly,
    is_file_ref,
    load_data,
    load_ref_and_views,
    positive_float,
    tags_to_set,
    training_from,
)
from .engine.history import epochs_text
from .errors import BadParameter, JupyterCifarError, NotFound, StoreUnavailable


def build_parser() -> argparse.ArgumentParser:
    from .engine.nets import DEFAULT_PRESET, PRESETS
    from .engine.precision import PRECISIONS

    parser = Parser(prog=PROG, description="Train, evaluate and classify CIFAR-10 image classifiers.")
    parser.add_argument("--version", action="version", version=f"jupyter_cifar {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True

    train = sub.add_parser("train", help="train a network on CIFAR-10")
    train.add_argument("--preset", default=DEFAULT_PRESET, choices=list(PRESETS), help="network and recipe")
    length = train.add_mutually_exclusive_group()
    length.add_argument("--epochs", type=count, metavar="N", help="default: the preset's")
    length.add_argument(
        "--minutes",
        type=positive_float,
        metavar="M",
        help="train for M minutes instead (from the first batch to the last; the final evaluation "
        "follows), the learning rate's schedule spread over them",
    )
    train.add_argument("--batch-size", type=count, metavar="N", help="default: the preset's")
    train.add_argument("--learning-rate", type=positive_float, metavar="LR")
    train.add_argument("--train-limit", type=count, metavar="N", help="train on N images")
    train.add_argument("--test-limit", type=count, metavar="N", help="evaluate on N images")
    train.add_argument("--seed", type=int, help="make the run repeatable")
    train.add_argument(
        "--precision",
        choices=PRECISIONS,
        help="default: the preset's, auto (mixed bfloat16 where this CPU's bfloat16 measures faster, "
        "mixed float16 on a GPU, float32 elsewhere)",
    )
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
    for add in (add_data_arg, add_store_arg, add_json_arg):
        add(train)

    evaluate = sub.add_parser("evaluate", help="test a model on CIFAR-10's test images, or on your photos")
    evaluate.add_argument("ref", metavar="REF", help=REF_HELP)
    evaluate.add_argument("--test-limit", type=count, metavar="N", help="evaluate on N images")
    evaluate.add_argument(
        "--photos",
        metavar="SET_OR_DIR",
        help="evaluate on these photos instead: a photo set of the store, or a folder with one sub-folder "
        "per class",
    )
    for add in (add_data_arg, add_store_arg, add_json_arg):
        add(evaluate)

    classify = sub.add_parser("classify", help="classify image files with a model")
    classify.add_argument("ref", metavar="REF", help=REF_HELP)
    classify.add_argument("inputs", nargs="+", metavar="FILE_OR_DIR", help="images or folders")
    classify.add_argument("--top", type=count, default=3, metavar="K", help="labels per image")
    classify.add_argument(
        "--explain",
        metavar="OUT_DIR",
        help="also write, for each image, where the model saw its top label (a Grad-CAM heatmap over the "
        "photo, OUT_DIR/<name>.gradcam.png)",
    )
    add_store_arg(classify)
    add_json_arg(classify)

    from .jobs import cli as jobs_cli
    from .photos import cli as photos_cli
    from .store import cli as models_cli

    models_cli.add_parser(sub)
    jobs_cli.add_parser(sub)
    photos_cli.add_parsers(sub)
    return parser


# -- commands ------------------------------------------------------------------------------------


def _train(args: argparse.Namespace, out: Output) -> int:
    tags = tags_to_set(args.tag)
    if args.detach:
        from .jobs.cli import detach

        return detach(args, out, tags)
    store = None
    if args.save is not None and not is_file_ref(args.save):
        from .store import open_store
        from .store.records import check_name, check_notes

        check_name(args.save, "--save")
        check_notes(args.notes)  # as the tags were: a bad one fails now, not after training
        store = open_store(args.store)  # an unreachable store fails now, not after training
        store.list(limit=1)
    elif args.save is not None and Path(args.save).suffix != ".keras":
        raise BadParameter("--save", f"a file path must end in .keras (got {args.save!r})")
    data = load_data(args.data, out)
    import_keras_quietly()
    from .engine.training import TrainConfig, Trainer

    config = TrainConfig(
        preset=args.preset,
        epochs=args.epochs,
        minutes=args.minutes,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        train_limit=args.train_limit,
        test_limit=args.test_limit,
        seed=args.seed,
        precision=args.precision,
    )
    if args.parent:
        model, history, parent, _ = training_from(args.parent, args.store, data.class_names)
        trainer = Trainer(data, config, model=model, history=history, parent=parent)
    else:
        trainer = Trainer(data, config)
    with ProgressBar(out) as bar:
        trainer.subscribe(bar.on_event)
        result = _run_interruptibly(trainer, out)
    if result.status == "failed":
        raise JupyterCifarError(f"training failed: {result.error}")
    saved, version = None, None
    if store is not None:
        record = store.save(result.model, args.save, metadata=result.metadata(), tags=tags, notes=args.notes)
        saved, version = record.name, record.version
    elif args.save:
        from .engine.modelfiles import save_model

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
            "precision": result.precision,
            "machine": result.machine,
        },
        lambda r: (
            f"{r['status']}: {epochs_text(r['epochs'])} of {r['preset']} in {r['seconds']:.1f} s "
            f"({r['images_per_second']:.0f} images/s); test accuracy {r['test_accuracy']:.4f}"
            + (f"; saved as {saved}:{version}" if version else f"; saved to {saved}" if saved else "")
        ),
    )
    return EXIT_OK


def _evaluate(args: argparse.Namespace, out: Output) -> int:
    from .engine.predict import evaluate

    model, views = load_ref_and_views(args.ref, args.store)
    if args.photos is not None:
        from .photos.cli import evaluate_photos_command

        return evaluate_photos_command(args, out, model, views)
    data = load_data(args.data, out).subset(None, args.test_limit)
    ev = evaluate(model, data.x_test, data.y_test, data.class_names)
    out.result(
        {"accuracy": ev.accuracy, "n": ev.n, "per_class": ev.per_class},
        lambda r: "\n".join(
            [f"accuracy {r['accuracy']:.4f} on {r['n']} test images"]
            + [f"  {name:<12} {acc:.4f}" for name, acc in r["per_class"].items()]
        ),
    )
    return EXIT_OK


def _classify(args: argparse.Namespace, out: Output) -> int:
    from .engine.predict import classify

    model, views = load_ref_and_views(args.ref, args.store)
    files = expand_inputs(args.inputs)
    # A missing or unreadable file gets its own error; a photo is seen through its version's views.
    items = classify(model, files, top=args.top, plan=views)
    results = [c.to_json() for c in items]
    if args.explain is not None:
        from .engine.data import CLASS_NAMES
        from .engine.explain import write_overlays

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


def _run_interruptibly(trainer: Any, out: Output) -> Any:
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


def _models(args: argparse.Namespace, out: Output) -> int:
    from .store.cli import run

    return run(args, out)


def _jobs(args: argparse.Namespace, out: Output) -> int:
    from .jobs.cli import run

    return run(args, out)


def _photos(args: argparse.Namespace, out: Output) -> int:
    from .photos.cli import run_photos

    return run_photos(args, out)


def _finetune(args: argparse.Namespace, out: Output) -> int:
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
        return COMMANDS[args.command](args, Output(args.json))
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
