"""Training images/s of the presets under each Keras backend, precision and thread setting; the input
pipeline's images/s alone next to them.

    python benchmarks/backends.py [--data DIR | --npz FILE] [--presets fast,accurate] [--images 4096]
        [--backends tensorflow,jax,torch] [--epochs 3] [--threads]

Keras reads ``KERAS_BACKEND`` once, at import, so every measurement runs in a process of its own. The
rate is the steady state: the first epoch (tracing, warm-up) is left out, and validation is off. With
``--threads`` the TensorFlow and torch runs are repeated with 1 and 2 intra-op threads and 1 inter-op
thread (``TF_NUM_INTRAOP_THREADS`` / ``TF_NUM_INTEROP_THREADS``, ``OMP_NUM_THREADS`` +
``torch.set_num_threads``). Backends that are not installed are reported as such.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks._common import DEFAULT_DATA, ChildFailed, machine, print_result, run_child, table


def child(args: argparse.Namespace) -> dict:
    from jupyter_cifar.engine.data import load_cifar10

    if os.environ.get("KERAS_BACKEND") == "torch" and os.environ.get("OMP_NUM_THREADS"):
        import torch

        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    from jupyter_cifar.engine.nets import get_preset
    from jupyter_cifar.engine.training import TrainConfig, Trainer

    data = load_cifar10(args.npz or args.data).subset(args.images, 100)
    stamps: dict[int, list[float]] = {}

    def on_event(event: dict) -> None:
        if event["type"] == "batch":
            stamps.setdefault(event["epoch"], []).append(time.perf_counter())

    config = TrainConfig(
        preset=args.run_preset,
        batch_size=get_preset(args.run_preset).batch_size,  # never shrunk for the small subset
        epochs=args.epochs,
        seed=0,
        precision=args.run_precision,
        validate_each_epoch=False,
    )
    trainer = Trainer(data, config)
    trainer.subscribe(on_event)
    result = trainer.run()
    if result.status != "finished":
        raise SystemExit(result.error)
    batch = trainer.config.batch_size
    assert batch is not None
    images = seconds = 0.0
    for epoch, times in stamps.items():
        if epoch > 1:
            images += (len(times) - 1) * batch
            seconds += times[-1] - times[0]
    return {"images_per_second": images / seconds, "policy": trainer.policy}


def pipeline_rate(data_arg: str, npz: str | None, batch_size: int, epochs: int = 3) -> float:
    """Images/s the numpy input pipeline prepares and serves on its own (the whole training set)."""
    import numpy as np

    from jupyter_cifar.engine.batches import Batches
    from jupyter_cifar.engine.data import load_cifar10

    data = load_cifar10(npz or data_arg)
    labels = np.eye(10, dtype=np.float32)[data.y_train]
    source = Batches(data.x_train, labels, batch_size, augment="flip-translate", seed=0)
    try:
        start = time.perf_counter()
        for epoch in range(epochs):
            if epoch:
                source.on_epoch_end()
            for i in range(len(source)):
                source[i]
        seconds = time.perf_counter() - start
    finally:
        source.close()
    return epochs * len(data.x_train) / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--npz", help="a packed .npz (e.g. the decoding cache file) instead of --data")
    parser.add_argument("--presets", default="fast,accurate")
    parser.add_argument("--backends", default="tensorflow,jax,torch")
    parser.add_argument("--images", type=int, default=5120)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--threads", action="store_true", help="also try 1 and 2 intra-op threads")
    parser.add_argument("--run-preset", help=argparse.SUPPRESS)
    parser.add_argument("--run-precision", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run_preset:
        print_result(child(args))
        return

    print(f"training images/s by backend ({machine()}; {args.images} images, batch of each preset)")
    from jupyter_cifar.engine.nets import get_preset

    rows = []
    presets = [p for p in args.presets.split(",") if p]
    for preset in presets:
        batch = get_preset(preset).batch_size
        rate = pipeline_rate(args.data, args.npz, batch)
        rows.append([preset, "numpy pipeline alone", "-", "-", f"{rate:.0f}"])
        print(rows[-1], flush=True)
    for backend in [b for b in args.backends.split(",") if b]:
        variants: list[tuple[str, dict[str, str]]] = [("default", {})]
        if args.threads and backend in ("tensorflow", "torch"):
            variants += [
                (
                    f"intra {n}, inter 1",
                    {
                        "TF_NUM_INTRAOP_THREADS": str(n),
                        "TF_NUM_INTEROP_THREADS": "1",
                        "OMP_NUM_THREADS": str(n),
                    },
                )
                for n in (1, 2)
            ]
        for preset in presets:
            for precision in ("mixed_bfloat16", "float32"):  # both, whatever "auto" picks here
                for label, env in variants:
                    if precision == "float32" and label != "default":
                        continue
                    command = ["--run-preset", preset, "--run-precision", precision, "--data", args.data]
                    command += ["--images", str(args.images), "--epochs", str(args.epochs)]
                    command += ["--npz", args.npz] if args.npz else []
                    try:
                        result = run_child(__file__, command, env={"KERAS_BACKEND": backend, **env})
                    except ChildFailed as e:
                        reason = (str(e).splitlines() or ["failed"])[-1][:80]
                        rows.append([preset, backend, precision, label, f"failed: {reason}"])
                    else:
                        rows.append(
                            [preset, backend, result["policy"], label, f"{result['images_per_second']:.0f}"]
                        )
                    print(rows[-1], flush=True)
    print(table(["preset", "backend", "precision", "threads", "images/s"], rows))
    from jupyter_cifar.engine.precision import bfloat16_speedup, resolve_precision

    print(
        f'precision "auto" picks {resolve_precision("auto")} here (for the TensorFlow backend; '
        f"bfloat16's products measured at {bfloat16_speedup():.2f}x float32's speed)"
    )


if __name__ == "__main__":
    main()
