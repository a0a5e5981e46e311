"""What each change to a preset's recipe gives: variants of `accurate` (or ``--base``) trained side by side.

    python benchmarks/recipe_sweep.py [--variants accurate,before,ep10+m0.9] [--seeds 0,1]
        [--base accurate|fast] [--workers N] [--data DIR] [--quick]

A variant is the base preset changed by ``+``-joined tokens, applied in order:

- ``accurate`` or ``base``: no change; ``before``: `accurate` as it was before issue 6's last round (GELU,
  BatchNorm scales, one learning rate for all, weight decay 5e-4, mirror-only test-time augmentation, 5
  epochs, SGD for every weight);
- ``gelu`` / ``relu``: the activation; ``scales`` / ``noscales``: BatchNorm with or without scales;
- ``wA-B-C``: the three groups' widths (a narrower network trains more epochs in the same time);
- ``epN``, ``bsN``: epochs, batch size; ``lrX``, ``mX``, ``wdX``, ``lsX``, ``wuX``: learning rate,
  momentum, weight decay, label smoothing, the warm-up's share of the steps; ``biasX``: the learning-rate
  multiple for BatchNorm's offsets; ``trN``: translations of up to N pixels (0: flips only); ``cjX``:
  colour jitter of strength X (brightness and contrast, hiverge's cifar10-speedrun: about 0.13);
- ``flip-tta`` / ``shift-tta``: test-time augmentation over mirror images, or mirror images and shifts;
- ``muon`` / ``sgd``: the convolutions' kernels trained by Muon (airbench94_muon's optimizer, as the
  whitened presets do) or by SGD as the other weights, ``mlrX`` / ``mmX`` Muon's learning rate and momentum;
  ``lookahead``: airbench's lookahead (a slow average the weights are pulled to).

Each (variant, seed) trains in its own process; ``--workers`` runs that many at once (on a GPU the small
network leaves room for several; on a 2-core CPU keep 1). Every run also reports its final model's
accuracy without test-time augmentation, with mirror images, and with mirror images and shifts, so one
run shows what each level adds. The first variant is the baseline the others are compared with.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import json
import os
import re
import statistics
import sys
import time
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks._common import DEFAULT_DATA, ChildFailed, machine, print_result, run_child, table

NAMED: dict[str, dict[str, Any]] = {
    "accurate": {},
    "base": {},
    "before": {
        "activation": "gelu",
        "bn_scale": True,
        "bias_lr": 1.0,
        "weight_decay": 5e-4,
        "tta": "flip",
        "epochs": 5,
        "kernels": "sgd",
    },
    "gelu": {"activation": "gelu"},
    "relu": {"activation": "relu"},
    "scales": {"bn_scale": True},
    "noscales": {"bn_scale": False},
    "flip-tta": {"tta": "flip"},
    "shift-tta": {"tta": "flip-translate"},
    "muon": {"kernels": "muon"},
    "sgd": {"kernels": "sgd"},
    "lookahead": {"lookahead": True},
}
NUMBERED = {"ep": "epochs", "bs": "batch_size", "lr": "learning_rate", "m": "momentum", "wd": "weight_decay",
            "ls": "label_smoothing", "bias": "bias_lr", "mlr": "muon_lr", "mm": "muon_momentum",
            "wu": "warmup", "tr": "translate", "cj": "color"}  # fmt: skip
BUILD = ("activation", "bn_scale", "widths")  # options of the network, not of the recipe


def changes(variant: str) -> dict[str, Any]:
    """The overrides a variant name stands for (ValueError for an unknown token)."""
    out: dict[str, Any] = {}
    for token in variant.split("+"):
        if token in NAMED:
            out.update(NAMED[token])
            continue
        widths = re.fullmatch(r"w([0-9]+)-([0-9]+)-([0-9]+)", token)
        if widths:
            out["widths"] = tuple(int(w) for w in widths.groups())
            continue
        match = re.fullmatch(r"(ep|bs|lr|mlr|mm|m|wd|ls|bias|wu|tr|cj)([0-9.e-]+)", token)
        if not match:
            raise ValueError(f"unknown variant token {token!r}")
        key = NUMBERED[match[1]]
        out[key] = int(match[2]) if key in ("epochs", "batch_size", "translate") else float(match[2])
    return out


def child(args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np

    from jupyter_cifar.engine import nets, tta
    from jupyter_cifar.engine.data import load_cifar10
    from jupyter_cifar.engine.training import TrainConfig, Trainer

    start = time.perf_counter()
    data = load_cifar10(args.data)
    over = changes(args.run_variant)
    build = {k: over.pop(k) for k in BUILD if k in over}
    base = nets.PRESETS[args.base]
    if build:  # the network changes too (the base's widths unless given; BatchNorm scales: fast has them)
        activation = build.get("activation", "relu")
        bn_scale = build.get("bn_scale", args.base == "fast")
        widths = build.get("widths", nets.WIDTHS[args.base])
        over["build"] = lambda n: nets._whitened_net(
            n, widths, args.base, activation=activation, bn_scale=bn_scale
        )
    nets.PRESETS[args.base] = dataclasses.replace(base, **over)
    quick = 5000 if args.quick else None
    trainer = Trainer(
        data,
        TrainConfig(
            preset=args.base,
            seed=args.run_seed,
            epochs=1 if quick else None,
            train_limit=quick,
            test_limit=quick and 1000,
            validate_each_epoch=False,
        ),
    )
    result = trainer.run()
    if result.status != "finished" or result.evaluation is None:
        raise SystemExit(f"{args.run_variant}: training failed: {result.error}")
    x, y = trainer.data.x_test, trainer.data.y_test.astype(np.int64)
    body = tta.without_tta(result.model)

    def logits(images: np.ndarray) -> np.ndarray:
        return np.asarray(body.predict(images, batch_size=1000, verbose=0), np.float32)

    def mirrored(images: np.ndarray, plain: np.ndarray | None = None) -> np.ndarray:
        plain = logits(images) if plain is None else plain
        return (plain + logits(images[:, :, ::-1])) / 2

    padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="reflect")
    plain = logits(x)
    flip = mirrored(x, plain)
    shifted = flip / 2 + mirrored(padded[:, :32, :32]) / 4 + mirrored(padded[:, 2:, 2:]) / 4
    return {
        "variant": args.run_variant,
        "seed": args.run_seed,
        "accuracy": result.evaluation.accuracy,
        "levels": [float((v.argmax(1) == y).mean()) for v in (plain, flip, shifted)],
        "epochs": len(result.history),
        "images_per_second": result.images_per_second,
        "seconds": time.perf_counter() - start,
    }


def spread(values: list[float], fmt: str = "{:.4f}") -> str:
    if len(values) == 1:
        return fmt.format(values[0])
    return f"{fmt.format(statistics.median(values))} [{fmt.format(min(values))}-{fmt.format(max(values))}]"


def report(runs: list[dict[str, Any]], variants: list[str]) -> str:
    base = [r["accuracy"] for r in runs if r["variant"] == variants[0]]
    rows = []
    for variant in variants:
        group = [r for r in runs if r["variant"] == variant]
        if not group:
            continue
        accuracy = [r["accuracy"] for r in group]
        delta = statistics.median(accuracy) - statistics.median(base) if base else None
        rows.append(
            [
                variant,
                len(group),
                group[0]["epochs"],
                spread(accuracy),
                "-" if delta is None or variant == variants[0] else f"{delta:+.4f}",
                " / ".join(f"{statistics.median(r['levels'][i] for r in group):.4f}" for i in range(3)),
                spread([r["images_per_second"] for r in group], "{:.0f}"),
                spread([r["seconds"] for r in group], "{:.0f}"),
            ]
        )
    header = ["variant", "seeds", "epochs", "accuracy", f"vs {variants[0]}", "no TTA / mirror / +shifts",
              "train img/s", "s"]  # fmt: skip
    return table(header, rows) + "\nmedian [min-max] over seeds; accuracy: the variant's own final model"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--variants", default="accurate,before")
    from jupyter_cifar.engine.nets import WIDTHS  # light: numpy only, no Keras

    parser.add_argument("--base", default="accurate", choices=sorted(WIDTHS), help="the preset varied")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--workers", type=int, default=1, help="runs at once")
    parser.add_argument("--quick", action="store_true", help="smoke run: 5,000 images, 1 epoch")
    parser.add_argument("--json", help="also write every run's figures to this file")
    parser.add_argument("--run-variant", help=argparse.SUPPRESS)  # internal: one run, in a child
    parser.add_argument("--run-seed", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run_variant:
        print_result(child(args))
        return
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    for variant in variants:
        try:
            changes(variant)  # unknown tokens fail here, before anything trains
        except ValueError as e:
            parser.error(str(e))
    from jupyter_cifar.engine.data import load_cifar10

    load_cifar10(args.data)  # decoded once, before the children read the cache
    backend = os.environ.get("KERAS_BACKEND", "tensorflow")
    print(f"recipe sweep of {args.base}, backend {backend}, {machine()}", flush=True)
    jobs = [(v, int(s)) for s in args.seeds.split(",") for v in variants]

    def run(job: tuple[str, int]) -> dict[str, Any] | None:
        variant, seed = job
        command = ["--data", args.data, "--base", args.base, "--run-variant", variant]
        command += ["--run-seed", str(seed)]
        try:
            result = run_child(__file__, command + (["--quick"] if args.quick else []))
        except ChildFailed as e:
            print(f"{variant} seed {seed}: failed\n{e}", file=sys.stderr, flush=True)
            return None
        print(f"{variant} seed {seed}: {result['accuracy']:.4f} ({result['seconds']:.0f} s)", flush=True)
        return result

    with concurrent.futures.ThreadPoolExecutor(args.workers) as pool:
        runs = [r for r in pool.map(run, jobs) if r is not None]
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": machine(), "runs": runs}, f, indent=1)
    print(report(runs, variants))


if __name__ == "__main__":
    main()
