"""Running a script under Keras' JAX backend from a test session that runs on TensorFlow.

Keras reads ``KERAS_BACKEND`` once, at import, so each such run is a process of its own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any


def run_under_jax(script: str, *args: str, env: dict[str, str] | None = None) -> tuple[dict[str, Any], str]:
    """What ``script`` printed last (one line of JSON), and its stderr. JAX's own settings (``JAX_*``) are
    only those of ``env``; the rest of this process's environment is passed on."""
    plain = {k: v for k, v in os.environ.items() if not k.startswith("JAX_")}
    out = subprocess.run(
        [sys.executable, "-c", script, *args],
        capture_output=True,
        text=True,
        env={**plain, "KERAS_BACKEND": "jax", "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})},
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1]), out.stderr
