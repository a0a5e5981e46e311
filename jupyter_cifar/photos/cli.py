"""``jupyter cifar photos …``, ``evaluate --photos`` and ``finetune``: a user's photos from a terminal.

``photos add`` keeps files (with ``--label``) or a folder of class sub-folders (``--from-folders``) in a
set, all or none: a file that is not an image is named and nothing of that command is kept. ``evaluate
REF --photos SET_OR_DIR`` and ``finetune REF --photos SET_OR_DIR --save NAME`` take a set of the store or
a folder. Exit statuses as elsewhere: 0 done, 1 partly (photos that could not be read were skipped),
2 a bad argument, 3 the store is unreachable.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..cli_common import (
    ProgressBar,
    add_data_arg,
    add_json_arg,
    add_store_arg,
    count,
    expand_inputs,
    import_keras_quietly,
    load_data,
    training_from,
)
from ..engine.data import CLASS_NAMES
from ..errors import BadParameter
from .records import DEFAULT_SET

SET_HELP = f"the photo set (default: {DEFAULT_SET})"
PHOTOS_HELP = "a photo set of the store, or a folder with one sub-folder per class (cat/, dog/, …)"


def add_parsers(sub: Any) -> None:
    photos = sub.add_parser("photos", help="your own labelled photos, in named sets of the store")
    verbs = photos.add_subparsers(dest="verb", metavar="VERB", parser_class=type(photos))
    verbs.required = True

    def verb(name: str, help: str) -> argparse.ArgumentParser:
        p = verbs.add_parser(name, help=help)
        p.add_argument("--set", default=DEFAULT_SET, help=SET_HELP)
        add_store_arg(p)
        add_json_arg(p)
        return p

    p = verb("add", "add photos: files (or folders of files) with --label, or --from-folders DIR")
    p.add_argument("inputs", nargs="*", metavar="FILE_OR_DIR")
    p.add_argument("--label", choices=CLASS_NAMES, help="the class of every photo given")
    p.add_argument("--from-folders", metavar="DIR", help="a folder with one sub-folder per class")
    p = verb("list", "the photos of a set, oldest first (with --set all: every set's)")
    p.add_argument("--sets", action="store_true", help="the sets instead, with their counts per class")
    p = verb("remove", "remove photos by id")
    p.add_argument("ids", nargs="+", metavar="ID")
    p = verb("export", "write a set as DIR/<class>/<id>.<ext>, each photo's own bytes")
    p.add_argument("directory", metavar="DIR")

    finetune = sub.add_parser(
        "finetune", help="train a model further on your photos, with CIFAR-10 replay; a new version"
    )
    finetune.add_argument("ref", metavar="REF", help="a stored version (NAME, NAME:VERSION, NAME@ALIAS)")
    finetune.add_argument("--photos", required=True, metavar="SET_OR_DIR", help=PHOTOS_HELP)
    finetune.add_argument("--save", required=True, metavar="NAME", help="save it as the next version of NAME")
    finetune.add_argument("--epochs", type=count, metavar="N", help="default: 4")
    finetune.add_argument(
        "--holdout",
        type=float,
        metavar="FRACTION",
        help="of each class, kept aside to measure before and after on (default: 0.2; 0: measure on the "
        "photos trained on)",
    )
    finetune.add_argument(
        "--test-limit",
        type=count,
        metavar="N",
        help="measure the CIFAR-10 test set before and after on N of its images (default: all)",
    )
    finetune.add_argument("--seed", type=int, default=0)
    for add in (add_data_arg, add_store_arg, add_json_arg):
        add(finetune)


def run_photos(args: argparse.Namespace, out: Any) -> int:
    from ..store import open_store
    from .store import open_photo_store

    skipped: list[dict[str, str]] = []
    if args.verb == "add":
        items, skipped = _items_to_add(args)  # read and checked before the store is opened
        for item in skipped:
            out.note(f"skipped {item['error']}")
        if not items:
            raise BadParameter("FILE_OR_DIR", "none of the files given is a photo this package can read")
    with open_store(args.store) as store, open_photo_store(store) as photos:
        if args.verb == "add":
            records = photos.add_many(items, set=args.set)
            counts = photos.counts(args.set)
            out.result(
                {
                    "added": [r.to_json() for r in records],
                    "skipped": skipped,
                    "set": args.set,
                    "counts": counts,
                },
                lambda r: (
                    f"added {len(r['added'])} photo(s) to {r['set']}; it has "
                    + ", ".join(f"{n} {label}" for label, n in r["counts"].items())
                ),
            )
        elif args.verb == "list" and args.sets:
            out.result(photos.sets(), _sets_text)
        elif args.verb == "list":
            records = photos.all(args.set)
            out.result([r.to_json() for r in records], _photos_text)
        elif args.verb == "remove":
            removed = photos.remove(args.ids, set=args.set)
            out.result([r.to_json() for r in removed], lambda rs: "\n".join(f"removed {r['id']}" for r in rs))
        else:
            n = photos.export(args.directory, args.set)
            out.result(
                {"exported": n, "directory": args.directory, "set": args.set},
                lambda r: f"wrote {r['exported']} photos of {r['set']} to {r['directory']}",
            )
    return 1 if skipped else 0


def _items_to_add(args: argparse.Namespace) -> tuple[list[tuple[bytes, str, str]], list[dict[str, str]]]:
    """The photos to add, and the files skipped (not images this package reads, named with why)."""
    from ..errors import ImageError
    from .records import new_record

    if (args.label is None) == (args.from_folders is None):
        raise BadParameter("--label", "give files with --label LABEL, or a folder with --from-folders DIR")
    if args.from_folders is not None:
        if args.inputs:
            raise BadParameter("--from-folders", "takes no FILE arguments beside it")
        from .labelled import folder_photos

        found = folder_photos(args.from_folders)
        pairs = [(Path(str(n)), CLASS_NAMES[int(y)]) for n, y in zip(found.names, found.labels, strict=True)]
    else:
        if not args.inputs:
            raise BadParameter("FILE_OR_DIR", "give at least one photo to add")
        pairs = [(path, args.label) for path in expand_inputs(args.inputs)]
    items, skipped = [], []
    for path, label in pairs:
        try:
            data = path.read_bytes()
            new_record(data, label, set=args.set, filename=str(path))
        except OSError as e:
            skipped.append({"file": str(path), "error": f"{path}: {e.strerror or e}"})
        except ImageError as e:
            skipped.append({"file": str(path), "error": str(e)})
        else:
            items.append((data, label, str(path)))
    return items, skipped


def _sets_text(sets: list[dict[str, Any]]) -> str:
    if not sets:
        return "no photo sets"
    return "\n".join(
        f"{s['name']}: {s['count']} photos (" + ", ".join(f"{n} {k}" for k, n in s["counts"].items()) + ")"
        for s in sets
    )


def _photos_text(records: list[dict[str, Any]]) -> str:
    if not records:
        return "no photos"
    lines = []
    for r in records:
        wrong = f"  {r['wrong_version']} said {r['predicted']}" if r["wrong_version"] else ""
        lines.append(
            f"{r['id']}  {r['label']:<10}  {r['width']}x{r['height']} {r['format']:<4}  {r['origin']:<10}  "
            f"{r['created'][:19].replace('T', ' ')}  {r['filename']}{wrong}"
        )
    return "\n".join(lines)


def evaluate_photos_command(args: argparse.Namespace, out: Any, model: Any, plan: Any = None) -> int:
    """``evaluate REF --photos``: ``plan`` is the views REF classifies photos with (its version's)."""
    from .finetune import evaluate_photos
    from .labelled import resolve_photos

    found = resolve_photos(args.photos, args.store)
    result = evaluate_photos(model, found, plan=plan)
    for item in result.skipped:
        out.note(f"skipped {item['error']}")
    ev = result.evaluation
    out.result(
        {"accuracy": ev.accuracy, "n": ev.n, "per_class": ev.per_class, "confusion": ev.confusion,
         "class_names": ev.class_names, "photos": result.where, "skipped": result.skipped},
        lambda r: "\n".join(
            [f"accuracy {r['accuracy']:.4f} on {r['n']} photos of {r['photos']}"]
            + [f"  {name:<12} {acc:.4f}" for name, acc in r["per_class"].items()]
        ),
    )  # fmt: skip
    return 1 if result.skipped else 0


def finetune_command(args: argparse.Namespace, out: Any) -> int:
    from ..engine.nets import PRESETS
    from ..engine.views import stored_plan
    from ..store import open_store
    from ..store.records import check_name
    from .finetune import DEFAULT_EPOCHS, DEFAULT_HOLDOUT, finetune
    from .labelled import resolve_photos

    check_name(args.save, "--save")
    store = open_store(args.store)
    found = resolve_photos(args.photos, args.store)  # an empty set or a bad folder fails before training
    data = load_data(args.data, out)
    model, history, parent, preset = training_from(args.ref, args.store, data.class_names, param="REF")
    import_keras_quietly()
    with ProgressBar(out) as bar:
        done = finetune(
            model, found, data, preset=preset if preset in PRESETS else "fast",
            epochs=args.epochs or DEFAULT_EPOCHS,
            holdout=DEFAULT_HOLDOUT if args.holdout is None else args.holdout,
            history=history, parent=parent, seed=args.seed, test_limit=args.test_limit, on_event=bar.on_event,
            views=stored_plan(store.resolve(parent).metadata) if parent else None,
        )  # fmt: skip
    for item in done.skipped:
        out.note(f"skipped {item['error']}")
    for note in done.notes:
        out.note(note)
    record = store.save(done.model, args.save, metadata=done.metadata())
    out.result(
        {"name": record.name, "version": record.version, "parent": parent, "photos_used": done.photos_used,
         "held_out": done.holdout, "before": done.before, "after": done.after,
         "negative_flips": done.negative_flips, "seconds": round(done.seconds, 1), "views": done.views},
        finetune_text,
    )  # fmt: skip
    return 1 if done.skipped else 0


def finetune_text(r: dict[str, Any]) -> str:
    """``finetune``'s result for people (its JSON is ``r``)."""
    return (
        f"saved {r['name']}:{r['version']} (from {r['parent']}), fine-tuned on {r['photos_used']} photos; "
        f"on {r['held_out']} held-out photos {r['before']['photos']:.4f} -> {r['after']['photos']:.4f}, "
        f"on the test set {r['before']['test']:.4f} -> {r['after']['test']:.4f} "
        f"({r['negative_flips']} test images it no longer gets right); it sees photos through "
        f"{r['views']['chosen']} (the parent through them: {r['views']['before_photos']:.4f})"
    )
