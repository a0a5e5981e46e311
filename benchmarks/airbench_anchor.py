"""The anchor on our data (issue 16): airbench94 itself, trained on the JPEG copy, beside `accurate`.

    python benchmarks/airbench_anchor.py [--data DIR] [--python TORCH_PYTHON] [--epochs 9.9]
                                         [--skip-accurate] [--quick] [--json FILE]

airbench94 (Keller Jordan's ``airbench`` package, 0.1.8 on PyPI: 94.01 % after 9.9 epochs on the original
CIFAR-10, mean of 1,000 runs on an A100) reports its accuracy on data that is not ours: the copy here is
JPEG at quality 75. This runs its own ``train94`` on our copy, so that its accuracy per epoch on our data
is the target ``accurate`` is measured against, in the same run.

How airbench gets our data without a line of it changed: its ``CifarLoader`` reads ``<path>/train.pt`` and
``<path>/test.pt`` (a dict of uint8 NHWC images, labels and class names) and only downloads when they are
missing, and ``train94`` builds its test loader from the relative path ``cifar10``. The child writes our
copy (decoded by ``jupyter_cifar.engine.data``, handed over as a packed .npz) to ``cifar10/*.pt`` in a scratch
folder and runs there. Its training loader is built exactly as ``train94`` builds its default one.

Where no GPU is at hand (PyTorch sees no CUDA) airbench runs on the CPU through shims set before it is
called, again without changing its code: ``.cuda()`` keeps a module or tensor where it is, CUDA events are
a wall clock, ``torch.load`` maps to the CPU, and ``.half()`` gives bfloat16, the CPU's 16-bit format
(float16 convolutions have no fast kernels on these CPUs; bfloat16 has fewer mantissa bits than float16,
said beside the figures). On a GPU nothing is shimmed.

PyTorch, torchvision and airbench are not dependencies of jupyter_cifar; give an interpreter that has
them with ``--python`` (on this machine: ``python -m venv v && v/bin/pip install torch==2.14.1
torchvision==0.29.1 numpy airbench==0.1.8``). `accurate` runs in this interpreter through
``benchmarks/time_to_accuracy.py``'s child (its clock, its per-epoch validation), by default for as many
epochs as airbench's (rounded up), its learning-rate schedule fitted to them: accuracy per epoch, side by
side (``--accurate-epochs 15`` for `accurate` as it ships). Both are also measured on
the 1,017 lossless originals of test images beside their JPEG twins (``cifar10-lossless-subset``).

``--quick`` is a smoke run: 5,000 training images, 1,000 test images, one epoch each.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

T0 = time.perf_counter()

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import DEFAULT_DATA, machine, print_result, run_child, table

DEFAULT_LOSSLESS = DEFAULT_DATA.parent / "cifar10-lossless-subset" / "cifar10_lossless_subset.npz"


# ----------------------------------------------------------------------------------------------- the child
# Runs in the PyTorch interpreter: only the standard library, numpy, torch and airbench are imported here.


def cpu_shims() -> list[str]:
    """Let airbench's CUDA-only code run on the CPU (see the module's docstring); what was shimmed."""
    import torch

    torch.nn.Module.cuda = lambda self, *a, **k: self  # type: ignore[method-assign]
    torch.Tensor.cuda = lambda self, *a, **k: self  # type: ignore[method-assign]
    torch.nn.Module.half = lambda self: self.to(torch.bfloat16)  # type: ignore[method-assign]
    torch.Tensor.half = lambda self, *a, **k: self.to(torch.bfloat16)  # type: ignore[method-assign]

    class WallEvent:
        def __init__(self, **_: Any) -> None:
            self.at = 0.0

        def record(self) -> None:
            self.at = time.perf_counter()

        def elapsed_time(self, end: WallEvent) -> float:
            return (end.at - self.at) * 1000

    torch.cuda.Event = WallEvent  # type: ignore[misc, assignment]
    torch.cuda.synchronize = lambda *a, **k: None
    load = torch.load
    torch.load = lambda f, *a, map_location=None, **k: load(f, *a, map_location="cpu", **k)  # type: ignore[misc]
    return [".cuda() a no-op", ".half() is bfloat16", "CUDA events a wall clock", "torch.load to the CPU"]


def airbench_child(args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np
    import torch

    on_gpu = torch.cuda.is_available()
    shims = [] if on_gpu else cpu_shims()
    torch.set_num_threads(os.cpu_count() or 1)
    import airbench
    from airbench import lib_airbench94

    with np.load(args.npz) as z:
        x_train, y_train, x_test, y_test = z["x_train"], z["y_train"], z["x_test"], z["y_test"]
        classes = [str(c) for c in z["class_names"]]
    if args.quick:  # the copy is in class order: a random part of each
        rng = np.random.default_rng(0)
        keep, held = rng.permutation(len(x_train))[:5000], rng.permutation(len(x_test))[:1000]
        x_train, y_train, x_test, y_test = x_train[keep], y_train[keep], x_test[held], y_test[held]
    work = tempfile.mkdtemp(prefix="airbench-")
    os.makedirs(os.path.join(work, "cifar10"))
    for name, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
        torch.save(
            {"images": torch.from_numpy(np.ascontiguousarray(x)),
             "labels": torch.from_numpy(y.astype(np.int64)), "classes": classes},
            os.path.join(work, "cifar10", f"{name}.pt"),
        )  # fmt: skip
    os.chdir(work)
    hyp = lib_airbench94.hyp
    loader = airbench.CifarLoader(
        "cifar10", train=True, batch_size=hyp["opt"]["batch_size"], aug=hyp["aug"], altflip=True
    )
    epochs = 1 if args.quick else args.epochs
    printed = io.StringIO()
    start = time.perf_counter()
    with contextlib.redirect_stdout(printed):
        model = airbench.train94(loader, epochs=epochs)
    seconds = time.perf_counter() - start
    sys.stderr.write(printed.getvalue())
    test = airbench.CifarLoader("cifar10", train=False, batch_size=2000)
    accuracy = {level: airbench.evaluate(model, test, tta_level=level) for level in (0, 2)}
    curve, own_seconds = [], seconds
    for line in printed.getvalue().splitlines():  # its table: run, epoch, loss, acc, val, tta_val, seconds
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 7 and cells[1].isdigit():
            curve.append((int(cells[1]) + 1, float(cells[4]), float(cells[6])))
        elif len(cells) == 7 and cells[1] == "eval":
            own_seconds = float(cells[6])
    lossless = None
    if os.path.exists(args.lossless) and not args.quick:
        lossless = _lossless(model, test, args.lossless, y_test)
    return {
        "accuracy": accuracy[2],
        "accuracy_no_tta": accuracy[0],
        "epochs": epochs,
        "train_seconds": seconds,
        "airbench_seconds": own_seconds,  # its own clock: training and the final TTA evaluation
        "total_seconds": time.perf_counter() - T0,
        "images_per_second": epochs * len(x_train) / (curve[-1][2] if curve else seconds),
        "curve": curve,
        "lossless": lossless,
        "device": torch.cuda.get_device_name() if on_gpu else "CPU",
        "shims": shims,
        "torch": torch.__version__,
    }


def _lossless(model: Any, test: Any, path: str, y_jpeg: Any) -> dict[str, Any]:
    """airbench's TTA accuracy on the lossless originals and on their JPEG twins (same images)."""
    import numpy as np
    import torch
    from airbench import infer

    from benchmarks.time_to_accuracy import jpeg_positions

    with np.load(path, allow_pickle=False) as z:
        x_orig, index, y_all = z["x_test_partial"], z["test_index"], z["y_test"].reshape(-1)
    positions = np.asarray(jpeg_positions(y_all))[index]
    y = y_all[index]
    assert (y_jpeg[positions] == y).all(), "the JPEG copy's test order is not the official one"
    originals = torch.from_numpy(x_orig).to(test.images.dtype).div(255).permute(0, 3, 1, 2)
    twins = test.images[torch.from_numpy(positions)]

    class Images:  # what infer() reads of a loader
        def __init__(self, images: Any) -> None:
            self.images, self.normalize = images.contiguous(memory_format=torch.channels_last), test.normalize

    def right(images: Any) -> float:
        logits = infer(model, Images(images), tta_level=2)
        return float((logits.argmax(1).numpy() == y).mean())

    return {"n": len(y), "original": right(originals), "jpeg": right(twins)}


# ---------------------------------------------------------------------------------------------- the parent


def pack(data_dir: str, path: Path) -> None:
    import numpy as np

    from jupyter_cifar.engine.data import load_cifar10

    data = load_cifar10(data_dir)
    np.savez(path, x_train=data.x_train, y_train=data.y_train, x_test=data.x_test, y_test=data.y_test,
             class_names=np.asarray(data.class_names))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--python", default=sys.executable, help="an interpreter with torch and airbench")
    parser.add_argument("--epochs", type=float, default=9.9, help="airbench94's (its default: 9.9)")
    parser.add_argument("--skip-accurate", action="store_true", help="airbench only")
    parser.add_argument(
        "--accurate-epochs", type=int, help="accurate's epochs (default: airbench's, rounded up; its own: 15)"
    )
    parser.add_argument("--lossless", default=str(DEFAULT_LOSSLESS))
    parser.add_argument("--quick", action="store_true", help="smoke run: 5,000 images, one epoch each")
    parser.add_argument("--json", help="also write both runs' figures to this file")
    parser.add_argument("--airbench-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--npz", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.airbench_child:
        print_result(airbench_child(args))
        return
    print(machine())
    with tempfile.TemporaryDirectory() as tmp:
        npz = Path(tmp) / "cifar10.npz"
        pack(args.data, npz)
        runs: dict[str, dict[str, Any]] = {}
        argv = [
            "--airbench-child",
            "--npz",
            str(npz),
            "--epochs",
            str(args.epochs),
            "--lossless",
            args.lossless,
        ]
        runs["airbench94 (train94, unchanged)"] = run_child(
            __file__, argv + (["--quick"] if args.quick else []), python=args.python
        )
        if not args.skip_accurate:
            theirs = Path(__file__).with_name("time_to_accuracy.py")
            argv = ["--run-preset", "accurate", "--run-seed", "0", "--npz", str(npz), "--epochs",
                    str(args.accurate_epochs or math.ceil(args.epochs)), "--budget-seconds", "1e9",
                    "--lossless", args.lossless]  # fmt: skip
            runs["accurate (jupyter_cifar)"] = run_child(
                str(theirs), argv + (["--quick"] if args.quick else [])
            )
    report(runs)
    if args.json:
        Path(args.json).write_text(json.dumps(runs, indent=1))


def report(runs: dict[str, dict[str, Any]]) -> None:
    rows = []
    for name, r in runs.items():
        seconds = r["airbench_seconds"] if "airbench_seconds" in r else r["curve"][-1][0]
        lossless = r.get("lossless")
        rows.append(
            [name, r["epochs"], f"{r['accuracy']:.4f}",
             f"{lossless['original']:.4f} / {lossless['jpeg']:.4f}" if lossless else "-",
             f"{seconds:.0f}", f"{r['images_per_second']:.0f}", r.get("device", "")]
        )  # fmt: skip
    print(table(["run", "epochs", "test (TTA)", "lossless / jpeg (1,017)", "s", "img/s", "device"], rows))
    print(
        "s: airbench's own clock (training and its final TTA evaluation); accurate's whole run less its "
        "per-epoch validation passes (start-up, data load, training, final evaluation)"
    )
    ab = runs.get("airbench94 (train94, unchanged)")
    if ab and ab.get("shims"):
        print(f"airbench on the CPU, torch {ab['torch']}: {'; '.join(ab['shims'])}")
    if ab:
        print("airbench per epoch (epoch, val without TTA, seconds): " + ", ".join(
            f"{e}: {acc:.4f} @ {s:.0f}" for e, acc, s in ab["curve"]))  # fmt: skip
    ours = runs.get("accurate (jupyter_cifar)")
    if ours:
        print(
            "accurate per epoch (seconds, val): " + ", ".join(f"{s:.0f}: {a:.4f}" for s, a in ours["curve"])
        )
    if ours and ab:
        print(f"accurate in {ours['epochs']} epochs (its schedule fitted to them) {ours['accuracy']:.4f} "
              f"against airbench94 in {ab['epochs']} {ab['accuracy']:.4f}: "
              f"{100 * (ours['accuracy'] - ab['accuracy']):+.2f} points")  # fmt: skip


if __name__ == "__main__":
    main()
