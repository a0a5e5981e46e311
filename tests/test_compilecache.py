"""JAX's persistent compilation cache (jupyter_cifar.engine.compilecache): a second training run under
Keras' JAX backend loads what the first compiled; the user's own choice of folder, or of none, wins; a
folder others could write code into is not used.

Every JAX run is a process of its own (tests/underjax.py).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from underjax import run_under_jax

from jupyter_cifar.engine.compilecache import use_jax_cache, why_not_private

# One short training run under JAX; prints what JAX's monitoring saw of its compilations.
TRAIN = """
import json, sys
import jax, jax.monitoring
counts = {"hits": 0, "misses": 0}
def on_event(event, **_):
    if event == "/jax/compilation_cache/cache_hits":
        counts["hits"] += 1
    elif event == "/jax/compilation_cache/cache_misses":
        counts["misses"] += 1
jax.monitoring.register_event_listener(on_event)
from jupyter_cifar.engine.data import load_cifar10
from jupyter_cifar.engine.training import TrainConfig, Trainer
data = load_cifar10(sys.argv[1], cache_dir=sys.argv[2])
result = Trainer(data, TrainConfig(preset="fast", epochs=1, train_limit=512, test_limit=256, seed=0)).run()
assert result.evaluation is not None, result.error
folder = jax.config.jax_compilation_cache_dir
print(json.dumps({**counts, "accuracy": result.evaluation.accuracy, "folder": folder}))
"""

# What use_jax_cache() chooses under JAX, in a process that compiled something before (as a kernel may
# have), and how many programs its folder holds after one more is compiled.
CHOOSE = """
import json, os
import jax
jax.jit(lambda x: x + 1)(1.0)
from jupyter_cifar.engine.compilecache import use_jax_cache
folder = use_jax_cache()
jax.jit(lambda x: x * 3 - 1)(2.0)
kept = len(os.listdir(folder)) if folder and os.path.isdir(folder) else None
print(json.dumps({"returned": folder and str(folder), "folder": jax.config.jax_compilation_cache_dir,
                  "min_seconds": jax.config.jax_persistent_cache_min_compile_time_secs, "kept": kept}))
"""


def entries(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


@pytest.mark.slow
def test_a_second_run_loads_what_the_first_compiled(tmp_path: Path, cifar10_dir: Path, cifar10) -> None:
    data_cache = os.environ["JUPYTER_CIFAR_CACHE"]  # the session's decoded data (the cifar10 fixture)
    env = {"JUPYTER_CIFAR_CACHE": str(tmp_path)}
    folder = tmp_path / "jax"

    first, _ = run_under_jax(TRAIN, str(cifar10_dir), data_cache, env=env)
    assert first["folder"] == str(folder)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    kept = entries(folder)
    # Everything compiled was kept, the small programs too (JAX's default keeps only those of 1 s or more).
    assert first["hits"] == 0 and first["misses"] >= 20
    assert len(kept) == first["misses"]

    second, _ = run_under_jax(TRAIN, str(cifar10_dir), data_cache, env=env)
    assert second["hits"] == first["misses"] and second["misses"] == 0
    assert entries(folder) == kept
    assert second["accuracy"] == pytest.approx(first["accuracy"], abs=0.02)


def test_the_users_own_choice_wins(tmp_path: Path) -> None:
    ours = tmp_path / "cache"
    theirs = tmp_path / "theirs"
    env = {"JUPYTER_CIFAR_CACHE": str(ours), "JAX_COMPILATION_CACHE_DIR": str(theirs)}
    chosen, _ = run_under_jax(CHOOSE, env=env)
    # JAX's own threshold: a program this small is not kept there.
    assert chosen == {"returned": str(theirs), "folder": str(theirs), "min_seconds": 1.0, "kept": 0}
    none, _ = run_under_jax(CHOOSE, env={"JUPYTER_CIFAR_CACHE": str(ours), "JAX_COMPILATION_CACHE_DIR": ""})
    assert none["returned"] is None and not none["folder"] and none["kept"] is None
    assert not ours.exists()
    # Where the user chose nothing: ours, keeping everything unless they set the threshold themselves.
    ours_chosen, _ = run_under_jax(CHOOSE, env={"JUPYTER_CIFAR_CACHE": str(ours)})
    folder = str(ours / "jax")
    assert ours_chosen == {"returned": folder, "folder": folder, "min_seconds": 0.0, "kept": 1}
    threshold, _ = run_under_jax(
        CHOOSE, env={"JUPYTER_CIFAR_CACHE": str(ours), "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "2"}
    )
    assert threshold["min_seconds"] == 2.0 and threshold["folder"] == str(ours / "jax")


def test_a_folder_others_can_write_to_is_not_used(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o777)
    shared.chmod(0o777)
    assert "can be written by other users (mode drwxrwxrwx)" in (why_not_private(shared) or "")
    shared.chmod(0o775)
    assert "can be written by other users" in (why_not_private(shared) or "")
    shared.chmod(0o755)
    assert why_not_private(shared) is None

    fresh = tmp_path / "a" / "b" / "jax"
    assert why_not_private(fresh) is None
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o700

    link = tmp_path / "link"
    link.symlink_to(fresh)
    assert "not a folder" in (why_not_private(link) or "")

    a_file = tmp_path / "file"
    a_file.write_text("")
    assert "File exists" in (why_not_private(a_file) or "")

    foreign = tmp_path / "foreign"
    foreign.mkdir(mode=0o700)
    if os.getuid() == 0:
        os.chown(foreign, 12345, 12345)
    else:  # not root: a folder of root's instead
        foreign = Path("/")
    assert "belongs to another user" in (why_not_private(foreign) or "")


def test_a_refused_folder_leaves_jax_without_a_cache(tmp_path: Path) -> None:
    ours = tmp_path / "cache"
    (ours / "jax").mkdir(parents=True)
    (ours / "jax").chmod(0o777)
    chosen, stderr = run_under_jax(CHOOSE, env={"JUPYTER_CIFAR_CACHE": str(ours)})
    assert chosen["returned"] is None and chosen["folder"] is None
    assert "JAX's compilation cache is off" in stderr and "can be written by other users" in stderr


def test_other_backends_are_left_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import keras

    monkeypatch.setenv("JUPYTER_CIFAR_CACHE", str(tmp_path))
    assert keras.backend.backend() == "tensorflow"
    assert use_jax_cache() is None
    assert not (tmp_path / "jax").exists()
