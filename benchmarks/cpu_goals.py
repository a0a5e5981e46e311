"""The CPU goals, measured the way a user meets them: the whole `jupyter cifar train` command, timed from
the shell, beside this machine's matrix-product peak measured in the same run.

    python benchmarks/cpu_goals.py [--runs fast,accurate,accurate@6,accurate~9] [--seed 0] [--data DIR]
        [--quick]

Each run is ``python -m jupyter_cifar train --preset P [--epochs N] --json`` in a fresh process: start-up,
TensorFlow's import, the data from its decoding cache (filled once before the runs), training with a
validation pass after each epoch, and the final evaluation (with test-time augmentation where the preset
has it). ``P@N`` trains N epochs instead of the preset's, to see what fits the time; ``P~M`` trains for M
minutes (``--minutes M``: the schedule spread over them), what a user with a deadline asks for.

The peak is TensorFlow's own square matrix product (2048 and 4096, the best of several) in float32 and
bfloat16, on all cores, in a child process before the runs. Training GFLOP/s counts 6 FLOP per
multiply-add of the network's forward pass per training image (the forward pass, then the gradients
with respect to the inputs and to the weights, each as large), times the trainer's own images/s; it is
compared with the peak of the precision the run trained in ("auto": :func:`jupyter_cifar.engine.nets.
resolve_precision`). That sets minutes of training against the product's best moment: on a machine whose
speed swings (a shared VM), ``benchmarks/step_breakdown.py --pairs N`` times each training step right
after a probe of the product, the fairer share.

Goals (issue 16): the whole command inside 60 s with `fast` at 0.70 or more; inside 10 minutes with
`accurate` or `balanced` at 0.93 or more with AMX, 0.90 or more with AVX512-BF16 (no goal elsewhere);
training at 80 % of the peak or more.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks._common import (
    DEFAULT_DATA,
    machine,
    matmul_gflops,
    multiply_adds,
    print_result,
    run_child,
    table,
)

SIZES = (2048, 4096)
GOAL_SHARE = 0.80


def peak_child(presets: list[str]) -> dict[str, Any]:
    """In a child: the matmul peak per precision, the precision "auto" trains in, each preset's size."""
    from jupyter_cifar.engine import nets
    from jupyter_cifar.engine.precision import resolve_precision

    peaks = {}
    for dtype in ("float32", "bfloat16"):
        probes = [matmul_gflops(n, dtype, reps=max(3, int(4e10 // (2 * n**3)))) for n in SIZES]
        peaks[dtype] = max(probe() for probe in probes for _ in range(3))
    sizes = {p: sum(map(multiply_adds, nets.build_model(p).layers)) for p in presets}
    return {"peaks": peaks, "precision": resolve_precision("auto"), "multiply_adds": sizes}


def parse_runs(text: str) -> list[tuple[str, str | None]]:
    """``fast,accurate@6,balanced~8.5`` -> [("fast", None), ("accurate", "@6"), ("balanced", "~8.5")]
    (ValueError on a bad epoch count or number of minutes)."""
    out: list[tuple[str, str | None]] = []
    for item in filter(None, (t.strip() for t in text.split(","))):
        preset, mark, length = item.partition("@") if "@" in item else item.partition("~")
        if mark == "@" and (not length.isdigit() or int(length) < 1):
            raise ValueError(f"bad epochs in {item!r}: want PRESET@N with N >= 1")
        if mark == "~" and (not re.fullmatch(r"[0-9]+(\.[0-9]+)?", length) or float(length) <= 0):
            raise ValueError(f"bad minutes in {item!r}: want PRESET~M with M > 0")
        out.append((preset, mark + length if mark else None))
    return out


def whole_command(preset: str, length: str | None, args: argparse.Namespace) -> dict[str, Any]:
    """Run the train command as a user would and time it from outside."""
    command = [sys.executable, "-m", "jupyter_cifar", "train", "--preset", preset, "--seed", str(args.seed),
               "--data", args.data, "--json"]  # fmt: skip
    if length:
        command += ["--epochs" if length[0] == "@" else "--minutes", length[1:]]
    if args.quick:
        command += ["--train-limit", "5000", "--test-limit", "1000"]
        command += [] if length and length[0] == "~" else ["--epochs", "1"]
    start = time.perf_counter()
    out = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if out.returncode:
        raise SystemExit(f"{' '.join(command[2:])} failed:\n{out.stderr.strip()[-2000:]}")
    result: dict[str, Any] = json.loads(out.stdout)
    return {**result, "wall": wall}


def goal(preset: str, flags: set[str]) -> tuple[float, float] | None:
    """(seconds, accuracy) the issue sets for this preset on this CPU, or None."""
    if preset == "fast":
        return 60.0, 0.70
    if preset in ("accurate", "balanced") and {"amx_tile", "amx_bf16"} <= flags:
        return 600.0, 0.93
    if preset in ("accurate", "balanced") and "avx512_bf16" in flags:
        return 600.0, 0.90
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--runs", default="fast,accurate")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="smoke run: 5,000 images, 1 epoch")
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--peak-for", help=argparse.SUPPRESS)  # internal: the peak, in a child
    args = parser.parse_args()
    if args.peak_for:
        print_result(peak_child(args.peak_for.split(",")))
        return
    try:
        runs = parse_runs(args.runs)
    except ValueError as e:
        parser.error(str(e))
    from jupyter_cifar.engine import nets
    from jupyter_cifar.engine.data import load_cifar10
    from jupyter_cifar.engine.precision import cpu_flags

    for preset, _ in runs:
        try:
            nets.get_preset(preset)
        except Exception as e:
            parser.error(str(e))
    load_cifar10(args.data)  # decoded once: every run below loads from the cache, as a user's second run
    print(f"CPU goals, {machine()}", flush=True)
    presets = sorted({p for p, _ in runs})
    measured = run_child(__file__, ["--peak-for", ",".join(presets)])
    peaks, precision = measured["peaks"], measured["precision"]
    print(
        f"matmul peak (TensorFlow, {'/'.join(map(str, SIZES))} square, best): float32 {peaks['float32']:.0f} "
        f'GFLOP/s, bfloat16 {peaks["bfloat16"]:.0f} GFLOP/s; "auto" trains in {precision} here',
        flush=True,
    )
    peak = peaks["bfloat16" if "bfloat16" in precision else "float32"]
    flags = cpu_flags()
    rows, results = [], []
    for preset, length in runs:
        r = whole_command(preset, length, args)
        flops = 6 * measured["multiply_adds"][preset] * r["images_per_second"] / 1e9
        target = goal(preset, flags)
        verdict = "no goal here"
        if target and not args.quick:
            seconds, accuracy = target
            met = r["wall"] <= seconds and r["test_accuracy"] >= accuracy
            verdict = f"{accuracy:.2f} in {seconds:.0f} s: {'met' if met else 'not met'}"
        results.append({**r, "preset": preset, "asked": length, "gflops": flops, "peak": peak})
        name = preset + (length or "")
        share = f"{flops:.0f} ({flops / peak:.0%})"
        rows.append([name, r["epochs"], f"{r['test_accuracy']:.4f}", f"{r['wall']:.0f}",
                     f"{r['seconds']:.0f}", f"{r['images_per_second']:.0f}", share, verdict])  # fmt: skip
        print(f"  {rows[-1][0]}: done", flush=True)
    print(table(["run", "epochs", "test accuracy", "whole command s", "trainer s", "train img/s",
                 f"train GFLOP/s (of {peak:.0f})", "goal"], rows))  # fmt: skip
    print(f"goal for training: {GOAL_SHARE:.0%} of the peak")
    if args.json:
        with open(args.json, "w") as f:
            figures = {"machine": machine(), "peaks": peaks, "precision": precision, "runs": results}
            json.dump(figures, f, indent=1)


if __name__ == "__main__":
    main()
