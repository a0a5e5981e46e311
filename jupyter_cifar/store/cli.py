"""``jupyter cifar models …``: the model store from a terminal (list, show, export, import, import-seed,
alias, tag, note, check, delete). Exit statuses as :mod:`jupyter_cifar.cli` says."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from ..cli_common import (
    EXIT_OK,
    EXIT_PARTIAL,
    STORE_REF_HELP,
    add_json_arg,
    add_store_arg,
    count,
    import_keras_quietly,
    parse_tags,
    tags_to_set,
)
from ..errors import BadParameter, ModelFileError
from . import open_store
from .records import GARBAGE_AGE_SECONDS, LOST_KINDS, Ref


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be 0 or more seconds (got {text})")
    return value


def add_parser(sub: Any) -> None:
    models = sub.add_parser("models", help="list and manage the models in the store")
    verbs = models.add_subparsers(dest="verb", metavar="VERB", parser_class=type(models))
    verbs.required = True

    def verb(name: str, help: str) -> argparse.ArgumentParser:
        p = verbs.add_parser(name, help=help)
        add_store_arg(p)
        add_json_arg(p)
        return p

    p = verb("list", "versions in the store, newest first")
    p.add_argument("--name", help="only this model's versions")
    p.add_argument("--search", help="text in the name or the notes")
    p.add_argument(
        "--tag", action="append", default=[], metavar="KEY=VALUE", help="only versions with this tag"
    )
    p.add_argument(
        "--sort", default="-created", help="created, name, version, test_accuracy or size; '-': descending"
    )
    p.add_argument("--limit", type=count, default=50, metavar="N", help="at most N versions (default: 50)")
    p.add_argument("--offset", type=int, default=0, metavar="N", help="skip the first N (the next page)")
    p = verb("show", "one version's record")
    p.add_argument("ref", metavar="REF", help=STORE_REF_HELP)
    p = verb("export", "write a version as .keras, ONNX, LiteRT or a SavedModel (checked before written)")
    p.add_argument("ref", metavar="REF", help=STORE_REF_HELP)
    p.add_argument(
        "path", metavar="PATH", help="ending in .keras, .onnx or .tflite, or a new folder for a SavedModel"
    )
    p.add_argument(
        "--format",
        choices=["keras", "onnx", "litert", "savedmodel"],
        help="the format (default: told from PATH)",
    )
    p.add_argument(
        "--data",
        help="CIFAR-10 folder whose first 256 test images check the export (default: $JUPYTER_CIFAR_DATA; "
        "without either, 256 fixed pseudo-random images)",
    )
    p = verb("import", "store a .keras or legacy .h5 file as the next version of NAME")
    p.add_argument("path", metavar="PATH")
    p.add_argument("--name", required=True)
    p.add_argument(
        "--scale",
        choices=["0-255", "0-1", "-1-1"],
        help="the pixel range a model without a Rescaling layer was trained on: a Rescaling to it is put in "
        "front (default: 0-255 assumed, and said)",
    )
    p.add_argument("--tag", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--notes", default="")
    p = verb("import-seed", "import the seed project's models: .h5 bytes inside MongoDB documents")
    p.add_argument("source", metavar="MONGODB_URI", help="the database the seed wrote to (mongodb://host/db)")
    p.add_argument("--collection", help="where the documents are (default: every collection)")
    p.add_argument("--name", default="seed", help="store them as versions of this model (default: seed)")
    p.add_argument(
        "--no-rescale",
        dest="rescale",
        action="store_false",
        help="keep models as they are (by default one without a Rescaling layer gets Rescaling(1/255) in "
        "front, since the seed divided pixels by 255 before training and this package passes 0..255)",
    )
    p = verb("alias", "point ALIAS at a version (moving it off any other)")
    p.add_argument("ref", metavar="REF", help=STORE_REF_HELP)
    p.add_argument("alias", metavar="ALIAS")
    p.add_argument("--remove", action="store_true", help="remove the alias instead")
    p = verb("tag", "set tags on a version (KEY= removes a tag)")
    p.add_argument("ref", metavar="REF", help=STORE_REF_HELP)
    p.add_argument("tags", nargs="+", metavar="KEY=VALUE")
    p = verb("note", "replace a version's notes")
    p.add_argument("ref", metavar="REF", help=STORE_REF_HELP)
    p.add_argument("notes", metavar="TEXT")
    p = verb("check", "find where the records and the stored files disagree (like git fsck)")
    p.add_argument(
        "--repair",
        action="store_true",
        help="fix what can be fixed safely: remove what killed saves left and dangling aliases, advance "
        "counters, drop the records of versions whose bytes are lost (never a whole version)",
    )
    p.add_argument(
        "--grace",
        type=_seconds,
        default=GARBAGE_AGE_SECONDS,
        metavar="SECONDS",
        help="MongoDB: leave leftovers younger than this alone, they may be saves still running "
        f"(default: {GARBAGE_AGE_SECONDS:.0f}); the embedded store knows which saves are running",
    )
    p = verb("delete", "delete a version, or with --all every version of a model (bytes included)")
    p.add_argument("ref", metavar="REF", help=STORE_REF_HELP)
    p.add_argument("--all", action="store_true", help="REF is a model name: delete all its versions")


def run(args: argparse.Namespace, out: Any) -> int:
    store = open_store(args.store)
    with store:
        return MODEL_VERBS[args.verb](store, args, out)


def _records_text(records: list[dict[str, Any]]) -> str:
    if not records:
        return "no models"
    rows = [
        (
            f"{r['name']}:{r['version']}",
            ",".join(r["aliases"]),
            "" if r["test_accuracy"] is None else f"{r['test_accuracy']:.4f}",
            r["created"][:19].replace("T", " "),
            f"{r['size'] / 1e6:.1f} MB",
            " ".join(f"{k}={v}" for k, v in r["tags"].items()),
        )
        for r in records
    ]
    header = ("REF", "ALIASES", "ACCURACY", "CREATED (UTC)", "SIZE", "TAGS")
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    return "\n".join(
        "  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    )


def _record_text(r: dict[str, Any]) -> str:
    return json.dumps(r, indent=2)


def _models_list(store: Any, args: argparse.Namespace, out: Any) -> int:
    tags = tags_to_set(args.tag)
    page = store.list(
        name=args.name, search=args.search, tags=tags, sort=args.sort, limit=args.limit, offset=args.offset
    )
    if not args.json and page.total > len(page.items):
        out.note(f"{len(page.items)} of {page.total} versions (--limit, --offset for more)")
    out.result([r.to_json() for r in page.items], _records_text)
    return EXIT_OK


def _models_show(store: Any, args: argparse.Namespace, out: Any) -> int:
    out.result(store.resolve(args.ref).to_json(), _record_text)
    return EXIT_OK


def _models_export(store: Any, args: argparse.Namespace, out: Any) -> int:
    from ..engine.export import export_format

    fmt = export_format(Path(args.path), args.format)
    images = None
    data = args.data or os.environ.get("JUPYTER_CIFAR_DATA")
    if fmt != "keras" and data:
        from ..engine.data import load_cifar10

        images = load_cifar10(data).x_test[:256]
    record, check = store.export_checked(args.ref, args.path, fmt, images=images)
    result = {**record.to_json(), "path": args.path, "format": fmt, "check": check and check.to_json()}
    out.result(result, _export_text)
    return EXIT_OK


def _export_text(r: dict[str, Any]) -> str:
    text = f"exported {r['name']}:{r['version']} to {r['path']} ({r['format']})"
    check = r["check"]
    if check:
        text += (
            f"; checked on {check['images']} images: the same top-1 class on all, probabilities within "
            f"{check['max_difference']:.1g}"
        )
        if check["note"]:
            text += f"; exported as {check['note']}"
    return text


def _models_import(store: Any, args: argparse.Namespace, out: Any) -> int:
    from ..engine.modelfiles import inspect_model_file, load_model, uses_layer
    from ..engine.scaling import SCALING_LAYERS, scaling_plan, with_input_scaling

    tags = tags_to_set(args.tag)
    try:
        facts = inspect_model_file(args.path)  # checked without Keras
        scaling, rescaling = scaling_plan(uses_layer(args.path, SCALING_LAYERS), args.scale)
        metadata: dict[str, Any] = {"input_scaling": scaling}
        source: Any = args.path  # a .keras file goes in byte for byte; a legacy .h5 is converted by Keras
        if rescaling is not None or facts["format"] == "h5":
            import_keras_quietly()
        if rescaling is not None:  # stored as the model with a Rescaling in front
            source = with_input_scaling(load_model(args.path), *rescaling)
            metadata |= {"imported_from": Path(args.path).name, "imported_format": facts["format"]}
        record = store.save(source, args.name, metadata=metadata, tags=tags, notes=args.notes)
    except ModelFileError as e:
        raise BadParameter("PATH", str(e)) from None
    out.result(
        record.to_json(),
        lambda r: (
            f"imported {args.path} as {r['name']}:{r['version']}; input: {r['metadata']['input_scaling']}"
        ),
    )
    return EXIT_OK


def _models_import_seed(store: Any, args: argparse.Namespace, out: Any) -> int:
    from .seed import import_seed_documents

    import_keras_quietly()
    report = import_seed_documents(
        args.source, store, args.name, collection=args.collection, rescale=args.rescale, progress=out.note
    )
    out.result(
        {"imported": [r.to_json() for r in report.imported], "skipped": report.skipped},
        lambda r: "\n".join(
            [
                f"imported {x['name']}:{x['version']} ({x['metadata'].get('imported_from')})"
                for x in r["imported"]
            ]
            + [f"skipped {s['document']}: {s['error']}" for s in r["skipped"]]
            + ([] if r["imported"] or r["skipped"] else ["no seed models found"])
        ),
    )
    return EXIT_PARTIAL if report.skipped else EXIT_OK


def _models_alias(store: Any, args: argparse.Namespace, out: Any) -> int:
    if args.remove:
        store.remove_alias(Ref.parse(args.ref).name, args.alias)
        record = store.resolve(Ref.parse(args.ref).name)
    else:
        record = store.set_alias(args.ref, args.alias)
    out.result(
        record.to_json(), lambda r: f"{r['name']}:{r['version']} aliases: {', '.join(r['aliases']) or '-'}"
    )
    return EXIT_OK


def _models_tag(store: Any, args: argparse.Namespace, out: Any) -> int:
    record = store.set_tags(args.ref, parse_tags(args.tags))
    out.result(
        record.to_json(),
        lambda r: (
            f"{r['name']}:{r['version']} tags: {' '.join(f'{k}={v}' for k, v in r['tags'].items()) or '-'}"
        ),
    )
    return EXIT_OK


def _models_note(store: Any, args: argparse.Namespace, out: Any) -> int:
    record = store.set_notes(args.ref, args.notes)
    out.result(record.to_json(), lambda r: f"{r['name']}:{r['version']} notes updated")
    return EXIT_OK


def _models_delete(store: Any, args: argparse.Namespace, out: Any) -> int:
    ref = Ref.parse(args.ref)
    if args.all:
        if ref.version is not None or ref.alias is not None:
            raise BadParameter("--all", f"give a model name, not one version ({args.ref})")
        deleted = store.delete_model(ref.name)
    elif ref.version is None and ref.alias is None:
        raise BadParameter(
            "REF",
            f"{args.ref!r} names a whole model: give NAME:VERSION, or add --all to delete every version",
        )
    else:
        deleted = [store.delete(ref)]
    out.result(
        [r.to_json() for r in deleted],
        lambda rs: "\n".join(f"deleted {r['name']}:{r['version']}" for r in rs),
    )
    return EXIT_OK


def _models_check(store: Any, args: argparse.Namespace, out: Any) -> int:
    report = store.check(repair=args.repair, grace=args.grace)
    out.result(report.to_json(), _check_text)
    return EXIT_OK if report.ok else EXIT_PARTIAL


def _check_text(r: dict[str, Any]) -> str:
    problems = r["problems"]
    lines = []
    for p in problems:
        where = f"{p['name']}:{p['version']}" if p["name"] else "-"
        state = "found" if not p["repaired"] else "removed" if p["kind"] in LOST_KINDS else "repaired"
        lines.append(f"{p['kind']:<14}  {where:<12}  {state:<8}  {p['detail']}")
    repaired = sum(p["repaired"] for p in problems)
    summary = f"checked {r['checked']} versions in {r['store']}: "
    if not problems:
        summary += "consistent"
    else:
        summary += f"{len(problems)} problem(s), {repaired} repaired"
    lost = [f"{p['name']}:{p['version']}" for p in problems if p["kind"] in LOST_KINDS]
    if lost:
        summary += f"; models lost: {', '.join(lost)}"
    if r["in_progress"]:
        summary += (
            f"; {r['in_progress']} leftover(s) young enough to belong to saves still running left alone "
            "(see --grace)"
        )
    if repaired < len(problems):
        summary += "; --repair fixes what can be fixed" if not repaired else "; the rest cannot be repaired"
    return "\n".join([*lines, summary])


MODEL_VERBS = {
    "list": _models_list,
    "show": _models_show,
    "export": _models_export,
    "import": _models_import,
    "import-seed": _models_import_seed,
    "alias": _models_alias,
    "tag": _models_tag,
    "note": _models_note,
    "delete": _models_delete,
    "check": _models_check,
}
