"""Time to 0.70 / 0.80 / 0.90 test accuracy of `tutorial` and each preset, over several seeds.

    python benchmarks/time_to_accuracy.py [--data DIR | --npz FILE] [--presets tutorial,fast,accurate]
        [--seeds 0,1,2] [--budget-seconds 660] [--precision auto] [--quick]

Each (preset, seed) runs in a fresh process, so its clock starts before Keras is imported and includes
loading the data (from the decoding cache, or from the packed .npz given with ``--npz``), building,
training and evaluating. The preset trains its own recipe with a validation pass on the 10,000 test images
after each epoch; "time to X" is the wall time at the end of the first epoch whose validation reaches X,
less the validation passes before it (they only watch; a run told to stop there would not make them), each
counted at the typical pass's time so that the first pass's one-time compilation stays on the clock.
``--budget-seconds`` stops a run that goes on longer (the tutorial's 10 epochs take ~10 minutes on two
CPU cores). The backend is Keras' (``KERAS_BACKEND=jax|torch|tensorflow``); on a GPU the presets use
mixed float16 by themselves. Also measured: accuracy on the 1,017 original lossless test images against
their JPEG twins (same images, same model).

``--quick`` is a smoke run: 5,000 training images, 1,000 test images, one epoch, one seed.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time

T0 = time.perf_counter()  # the clock of a child run starts here, before Keras is imported

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks._common import DEFAULT_DATA, ChildFailed, machine, print_result, run_child, table

DEFAULT_LOSSLESS = DEFAULT_DATA.parent / "cifar10-lossless-subset" / "cifar10_lossless_subset.npz"
TARGETS = (0.70, 0.80, 0.90)


# --------------------------------------------------------------------------------------------
# One run (child process)


def jpeg_positions(y_official) -> list[int]:
    """Where each official test image sits in the JPEG copy (class folders, then rank within the class)."""
    import numpy as np

    y = np.asarray(y_official).reshape(-1)
    counts = np.bincount(y, minlength=10)
    offset = np.concatenate([[0], np.cumsum(counts)[:-1]])
    seen = np.zeros(len(counts), np.int64)
    out = []
    for label in y:
        out.append(int(offset[label] + seen[label]))
        seen[label] += 1
    return out


def child(args: argparse.Namespace) -> dict:
    import numpy as np

    from jupyter_cifar.engine.data import load_cifar10

    data = load_cifar10(args.npz or args.data)
    loaded = time.perf_counter() - T0
    import keras

    from jupyter_cifar.engine.predict import predict_proba
    from jupyter_cifar.engine.training import TrainConfig, Trainer

    quick = args.quick
    config = TrainConfig(
        preset=args.run_preset,
        seed=args.run_seed,
        epochs=1 if quick else args.epochs,
        train_limit=5000 if quick else None,
        test_limit=1000 if quick else None,
        precision=args.precision,
    )
    trainer = Trainer(data, config)
    epochs: list[dict] = []
    last_batch = [0.0]

    def on_event(event: dict) -> None:
        now = time.perf_counter() - T0
        if event["type"] == "batch":
            last_batch[0] = now
            if now > args.budget_seconds:
                trainer.stop()
        elif event["type"] == "epoch":
            epochs.append(
                {
                    "epoch": event["epoch"],
                    "wall": now,
                    "validation_seconds": now - last_batch[0],
                    "val_accuracy": event["val_accuracy"],
                }
            )

    trainer.subscribe(on_event)
    result = trainer.run()
    total = time.perf_counter() - T0
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu = usage.ru_utime + usage.ru_stime
    if result.status == "failed":
        raise SystemExit(f"{args.run_preset}: training failed: {result.error}")
    # Time to each accuracy: the earlier validation passes are taken off the clock, each at most at the
    # typical pass's time, so that a one-time cost of the first (compiling the inference step, which a run
    # told to stop there would pay for its own evaluation too) stays on it.
    passes = sorted(row["validation_seconds"] for row in epochs[:-1]) or [0.0]
    typical = passes[len(passes) // 2]
    watched = 0.0
    curve = []
    for row in epochs:
        if row["val_accuracy"] is not None:
            curve.append((row["wall"] - watched, row["val_accuracy"]))
        watched += min(row["validation_seconds"], typical)
    accuracy = result.evaluation.accuracy if result.evaluation else 0.0
    if not curve or curve[-1][1] != accuracy:  # stopped mid-epoch: the final evaluation counts
        curve.append((total - watched, accuracy))
    lossless = None
    if args.lossless and os.path.exists(args.lossless) and not quick:
        with np.load(args.lossless, allow_pickle=False) as z:
            x_orig, index, y_all = z["x_test_partial"], z["test_index"], z["y_test"].reshape(-1)
        positions = np.asarray(jpeg_positions(y_all))[index]
        y = y_all[index]
        twins = data.x_test[positions]
        assert (data.y_test[positions] == y).all(), "the JPEG copy's test order is not the official one"
        lossless = {
            "n": len(y),
            "original": float((predict_proba(result.model, x_orig).argmax(1) == y).mean()),
            "jpeg": float((predict_proba(result.model, twins).argmax(1) == y).mean()),
        }
    return {
        "preset": args.run_preset,
        "seed": args.run_seed,
        "status": result.status,
        "accuracy": accuracy,
        "epochs": len(result.history),
        "total_seconds": total,
        "cpu_seconds": cpu,
        "load_seconds": loaded,
        "images_per_second": result.images_per_second,
        "curve": curve,
        "lossless": lossless,
        "backend": keras.backend.backend(),
        "device": device_name(),
        "policy": trainer.policy,
    }


def device_name() -> str:
    """The accelerator the backend trains on, in words (best effort), else "cpu"."""
    import keras

    from jupyter_cifar.engine.precision import gpu_visible

    try:
        if keras.backend.backend() == "torch":
            import torch

            return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
        if keras.backend.backend() == "jax":
            import jax

            device = jax.devices()[0]
            return "cpu" if device.platform == "cpu" else str(getattr(device, "device_kind", device))
    except Exception:
        pass
    return "gpu" if gpu_visible() else "cpu"


# --------------------------------------------------------------------------------------------
# The driver


def time_to(curve: list[list[float]], target: float) -> float | None:
    for seconds, accuracy in curve:
        if accuracy >= target:
            return seconds
    return None


def spread(values: list[float], fmt: str = "{:.0f}") -> str:
    if not values:
        return "-"
    med = statistics.median(values)
    if len(values) == 1:
        return fmt.format(med)
    return f"{fmt.format(med)} [{fmt.format(min(values))}-{fmt.format(max(values))}]"


def report(runs: list[dict], targets: tuple[float, ...]) -> str:
    by_preset: dict[str, list[dict]] = {}
    for run in runs:
        by_preset.setdefault(run["preset"], []).append(run)
    lines = []
    rows = []
    base = by_preset.get("tutorial")
    # The tutorial's own best (median over seeds): how soon each preset gets there too.
    base_best = statistics.median(r["accuracy"] for r in base) if base else None
    base_times_best = [t for r in base or [] if (t := time_to(r["curve"], base_best or 0.0)) is not None]
    base_time = statistics.median(base_times_best) if base_times_best else None
    for name, group in by_preset.items():
        n = len(group)
        row: list[object] = [name, n, spread([r["accuracy"] for r in group], "{:.4f}")]
        for target in targets:
            times = [t for r in group if (t := time_to(r["curve"], target)) is not None]
            cell = spread(times) + ("" if len(times) == n else f" ({len(times)}/{n})")
            rows_ratio = ""
            base_times = [t for r in base or [] if (t := time_to(r["curve"], target)) is not None]
            if times and base_times and name != "tutorial":
                rows_ratio = f" {statistics.median(base_times) / statistics.median(times):.1f}x"
            row.append(cell + rows_ratio if times else f"not reached ({n})")
        if base_best is not None and base_time is not None:
            times = [t for r in group if (t := time_to(r["curve"], base_best)) is not None]
            ratio = "" if name == "tutorial" else f" ({base_time / statistics.median(times):.1f}x)"
            row.append(f"{spread(times)}{ratio}" if times else "-")
        row.append(spread([r["total_seconds"] for r in group]))
        row.append(spread([r["cpu_seconds"] for r in group]))
        row.append(spread([r["images_per_second"] for r in group]))
        lossless = [r["lossless"] for r in group if r["lossless"]]
        row.append(
            f"{statistics.median(x['original'] for x in lossless):.4f} / "
            f"{statistics.median(x['jpeg'] for x in lossless):.4f}"
            if lossless
            else "-"
        )
        rows.append(row)
    header = ["preset", "seeds", "final accuracy"]
    header += [f"s to {t:.2f}" for t in targets]
    if base_best is not None:
        header.append(f"s to tutorial's {base_best:.3f}")
    header += ["total s", "cpu s", "train img/s", "lossless / jpeg (1,017)"]
    lines.append(table(header, rows))
    lines.append(
        "median [min-max] over seeds; times in seconds of wall clock from process start (data load "
        "included, watching-only validation passes excluded); Nx: how many times sooner than tutorial;\n"
        "cpu s: the process's CPU time (user + system), a figure other processes on the machine barely move"
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="the CIFAR-10 folder (cached after load)")
    parser.add_argument("--npz", help="a packed .npz (e.g. the decoding cache file) instead of --data")
    parser.add_argument("--presets", default="tutorial,fast,accurate")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--budget-seconds", type=float, default=660.0, help="stop a run after this")
    parser.add_argument("--precision", default=None, help="auto, float32, mixed_bfloat16, mixed_float16")
    parser.add_argument("--lossless", default=str(DEFAULT_LOSSLESS))
    parser.add_argument(
        "--epochs", type=int, help="instead of each preset's own (its schedule fitted to them)"
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: 5,000 images, 1 epoch, 1 seed")
    parser.add_argument("--json", help="also write every run's figures to this file")
    parser.add_argument("--run-preset", help=argparse.SUPPRESS)  # internal: one run, in a child
    parser.add_argument("--run-seed", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run_preset:
        print_result(child(args))
        return
    presets = [p.strip() for p in args.presets.split(",") if p.strip()]
    seeds = [int(s) for s in args.seeds.split(",")][: 1 if args.quick else None]
    backend = os.environ.get("KERAS_BACKEND", "tensorflow")
    print(f"time to accuracy, backend {backend}, {machine()}", flush=True)
    runs = []
    for seed in seeds:
        for preset in presets:
            command = ["--run-preset", preset, "--run-seed", str(seed), "--data", args.data]
            command += ["--budget-seconds", str(args.budget_seconds), "--lossless", args.lossless]
            command += ["--npz", args.npz] if args.npz else []
            command += ["--precision", args.precision] if args.precision else []
            command += ["--epochs", str(args.epochs)] if args.epochs else []
            command += ["--quick"] if args.quick else []
            try:
                run = run_child(__file__, command)
            except ChildFailed as e:
                print(f"{preset} seed {seed}: failed\n{e}", file=sys.stderr, flush=True)
                continue
            runs.append(run)
            curve = ", ".join(f"{a:.3f}@{s:.0f}s" for s, a in run["curve"])
            print(
                f"{preset} seed {seed}: {run['accuracy']:.4f} in {run['total_seconds']:.1f} s "
                f"(cpu {run['cpu_seconds']:.0f} s) "
                f"({run['device']}, {run['policy']}, {run['images_per_second']:.0f} img/s; "
                f"load {run['load_seconds']:.1f} s); "
                f"curve {curve}",
                flush=True,
            )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": machine(), "backend": backend, "runs": runs}, f, indent=1)
    if runs:
        print(report(runs, TARGETS))


if __name__ == "__main__":
    main()
