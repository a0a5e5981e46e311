"""The server extension: a 100 MB model through the REST API against the store directly; start-up cost.

    python benchmarks/server_io.py [--megabytes 100] [--starts 3]

Both paths use an embedded store on the same disk: "direct" is LocalModelStore.save_file / export in
this process; "API" is RemoteModelStore against a real `jupyter server` process (upload streamed,
download streamed and verified here). Start-up: seconds from launching `jupyter server` until its
own /api/status answers, with the extension enabled and disabled, and whether TensorFlow got loaded.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path[:0] = [
    str(Path(__file__).resolve().parent.parent),
    str(Path(__file__).resolve().parent.parent / "tests"),
]

from jupyterserver import JupyterServer

from benchmarks._common import machine, table
from jupyter_cifar.store.local import LocalModelStore
from jupyter_cifar.store.remote import RemoteModelStore


def timed(fn, *args, **kwargs) -> float:
    start = time.perf_counter()
    fn(*args, **kwargs)
    return time.perf_counter() - start


def io_rates(store, model: Path, out: Path, repeats: int = 3) -> tuple[float, float]:
    """Median seconds of save_file and export."""
    saves, loads = [], []
    for _ in range(repeats):
        saves.append(timed(store.save_file, model, "big"))
        loads.append(timed(store.export, "big", out))
    return statistics.median(saves), statistics.median(loads)


def start_time(root: Path, enabled: bool) -> tuple[float, bool]:
    """Seconds until Jupyter's own /api/status answers, and whether TensorFlow is in the process."""
    # The user's config wins over the one pip installed (which enables the extension).
    (root / "config").mkdir(parents=True)
    (root / "config" / "jupyter_server_config.json").write_text(
        json.dumps({"ServerApp": {"jpserver_extensions": {"jupyter_cifar": enabled}}})
    )
    server = JupyterServer(root, store_uri=str(root / "models"), ready_path="api/status")
    start = time.perf_counter()
    server.start()
    seconds = time.perf_counter() - start
    try:
        assert server.proc is not None
        tensorflow = "tensorflow" in Path(f"/proc/{server.proc.pid}/maps").read_text()
        if enabled:
            server.get("jupyter-cifar/api/status")  # the extension really is loaded
    finally:
        server.stop()
    return seconds, tensorflow


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=int, default=100)
    parser.add_argument("--starts", type=int, default=3)
    args = parser.parse_args()
    from storetools import big_model

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        model = tmp / "big.keras"
        big_model(args.megabytes).save(model)
        size_mb = model.stat().st_size / 1e6
        with LocalModelStore(tmp / "direct") as direct:
            d_save, d_load = io_rates(direct, model, tmp / "out-direct.keras")
        server = JupyterServer(tmp / "server", store_uri=str(tmp / "served")).start()
        try:
            with RemoteModelStore(server.store_url) as remote:
                r_save, r_load = io_rates(remote, model, tmp / "out-api.keras")
        finally:
            server.stop()
        print(f"a {size_mb:.0f} MB model file through the API vs the store directly ({machine()})")
        print(
            table(
                ["operation", "direct s", "direct MB/s", "API s", "API MB/s", "API / direct"],
                [
                    [op, f"{d:.2f}", f"{size_mb / d:.0f}", f"{r:.2f}", f"{size_mb / r:.0f}", f"{d / r:.2f}x"]
                    for op, d, r in (("save (upload)", d_save, r_save), ("export (download)", d_load, r_load))
                ],
            )
        )
        rows = []
        for enabled in (False, True):
            runs = [start_time(tmp / f"start-{enabled}-{i}", enabled) for i in range(args.starts)]
            rows.append(
                [
                    "with jupyter_cifar" if enabled else "without",
                    f"{statistics.median(r[0] for r in runs):.2f}",
                    "yes" if any(r[1] for r in runs) else "no",
                ]
            )
        print(f"\njupyter server start until /api/status answers (median of {args.starts})")
        print(table(["server", "seconds", "TensorFlow loaded"], rows))
        extra = float(rows[1][1]) - float(rows[0][1])
        print(f"the extension adds {extra * 1000:.0f} ms")


if __name__ == "__main__":
    main()
