"""The kernels' probe (jupyter_cifar.engine.convprobe): each way to train a small-map convolution is timed
on this CPU once per shape, the answer kept in the cache folder and followed by fastview's training view.

Which way wins is this machine's business (the benchmarks measure it: ``conv_crossover.py``); these tests
hold the probe to its contract: it times every way it is offered and picks by its margin, measures a shape
once, keeps answers apart by what they depend on, survives a kept file that is damaged or lies, and the
view trains each convolution the way the kept answer says.
"""

from __future__ import annotations

import json
from pathlib import Path

import keras
import pytest

from jupyter_cifar.engine import convprobe, fastview, nets, precision

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow", reason="the kernels probed are TensorFlow's"
)


@pytest.fixture
def kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A cache folder of the test's own, and a count of the probe's measurements."""
    monkeypatch.setenv("JUPYTER_CIFAR_CACHE", str(tmp_path))
    monkeypatch.delenv(convprobe.ENV_PROBE, raising=False)
    return tmp_path / convprobe.FILE_NAME


@pytest.fixture
def measured(monkeypatch: pytest.MonkeyPatch) -> list[tuple]:
    """Each real measurement the probe makes (a spy around it: the timing itself runs)."""
    calls: list[tuple] = []
    real = convprobe.measure

    def spy(shape, policy, ways, batch):  # type: ignore[no-untyped-def]
        calls.append((shape, str(policy.name), tuple(ways), batch))
        return real(shape, policy, ways, batch)

    monkeypatch.setattr(convprobe, "measure", spy)
    return calls


def small_conv(
    side: int = 3, channels: int = 8, filters: int = 8, dtype: str = "float32"
) -> keras.layers.Conv2D:
    """A plain 3x3 convolution inside a functional model, as the presets' are (its input shape known)."""
    inputs = keras.Input((side, side, channels))
    conv = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False, dtype=dtype)
    keras.Model(inputs, conv(inputs))
    return conv


def test_pick_takes_another_way_only_by_the_margin() -> None:
    assert convprobe.pick({"oneDNN": 1.0, "matmuls": 0.95}) == "oneDNN"  # 1.05x: noise, not a reason
    assert convprobe.pick({"oneDNN": 1.0, "matmuls": 0.8, "written out": 0.5}) == "written out"
    assert convprobe.pick({"oneDNN": 1.0, "matmuls": 0.9}) == "matmuls"  # 1.11x
    assert convprobe.pick({"oneDNN": 0.5, "matmuls": 0.9}) == "oneDNN"
    assert convprobe.pick({"oneDNN": 1.0, "matmuls": 0.8}, margin=1.5) == "oneDNN"


def test_a_shape_is_measured_once_and_its_answer_kept(kept: Path, measured: list[tuple]) -> None:
    conv = small_conv()
    ways = fastview.probe_ways(conv)
    assert list(ways) == ["oneDNN", "matmuls", "written out"]
    way = convprobe.fastest(conv, ways, batch=16)
    assert measured == [((3, 3, 8, 8), "float32", ("oneDNN", "matmuls", "written out"), 16)]
    (key, answer), *others = json.loads(kept.read_text()).items()
    assert not others
    assert set(answer["ms"]) == set(ways) and all(ms > 0 for ms in answer["ms"].values())
    assert answer["way"] == way == convprobe.pick(answer["ms"])  # the kept times decide it
    assert "float32 | batch 16 | 3x3x8x8 | matmuls, oneDNN, written out" in key
    assert "tensorflow " in key and "family " in key  # the CPU and TensorFlow it was measured on

    assert convprobe.fastest(small_conv(), ways, batch=16) == way  # another layer of that shape: kept
    assert len(measured) == 1
    convprobe.fastest(conv, ways, batch=1000)  # a larger batch is probed at 256 (and may answer otherwise)
    convprobe.fastest(conv, ways, batch=8)  # ... a smaller one at its own
    assert [call[3] for call in measured] == [16, 256, 8]


def test_answers_are_kept_apart_by_precision_ways_and_cpu(
    kept: Path, measured: list[tuple], monkeypatch: pytest.MonkeyPatch
) -> None:
    ways = fastview.probe_ways(small_conv())
    convprobe.fastest(small_conv(), ways, batch=8)
    convprobe.fastest(small_conv(dtype="mixed_bfloat16"), ways, batch=8)
    two = fastview.probe_ways(small_conv(), written_out=False)
    assert list(two) == ["oneDNN", "matmuls"]
    convprobe.fastest(small_conv(), two, batch=8)
    monkeypatch.setattr(precision, "cpu_flags", lambda: {"avx512f", "amx_tile", "amx_bf16"})
    convprobe.fastest(small_conv(), ways, batch=8)  # another CPU's flags: not this one's answer
    assert [(dtype, len(w)) for _, dtype, w, _ in measured] == [
        ("float32", 3), ("mixed_bfloat16", 3), ("float32", 2), ("float32", 3)
    ]  # fmt: skip
    assert len(json.loads(kept.read_text())) == 4


def test_a_damaged_or_lying_file_is_measured_anew(kept: Path, measured: list[tuple]) -> None:
    conv = small_conv()
    ways = fastview.probe_ways(conv)
    kept.write_text("{not json")
    way = convprobe.fastest(conv, ways, batch=8)
    assert len(measured) == 1 and json.loads(kept.read_text())  # rewritten whole
    (key,) = json.loads(kept.read_text())
    kept.write_text(json.dumps({key: {"way": "os.system('rm -rf ~')"}}))  # names no way offered
    assert convprobe.fastest(conv, ways, batch=8) in ways
    assert len(measured) == 2 and json.loads(kept.read_text())[key]["way"] in ways
    kept.write_text(json.dumps([way]))  # JSON, but not a table of answers
    convprobe.fastest(conv, ways, batch=8)
    assert len(measured) == 3


def test_a_folder_that_cannot_be_written_costs_a_probe_not_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, measured: list[tuple], caplog: pytest.LogCaptureFixture
) -> None:
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    monkeypatch.setenv("JUPYTER_CIFAR_CACHE", str(blocked))
    conv = small_conv()
    assert convprobe.fastest(conv, fastview.probe_ways(conv), batch=8) in fastview.probe_ways(conv)
    assert "could not keep its answer" in caplog.text and str(blocked) in caplog.text
    assert blocked.read_text() == "not a folder"
    convprobe.fastest(conv, fastview.probe_ways(conv), batch=8)
    assert len(measured) == 2  # nothing kept: measured again

    folder = tmp_path / "cache"
    (folder / convprobe.FILE_NAME).mkdir(parents=True)  # the file's name taken by a folder
    monkeypatch.setenv("JUPYTER_CIFAR_CACHE", str(folder))
    assert convprobe.fastest(conv, fastview.probe_ways(conv), batch=8) in fastview.probe_ways(conv)
    assert "cannot be read" in caplog.text
    assert [p.name for p in folder.iterdir()] == [convprobe.FILE_NAME]  # its half-written file removed


def _fast(policy: str = "float32") -> keras.Model:
    model = nets.build_model("fast", precision=policy)
    nets.compile_for_training(model, nets.get_preset("fast"), 0.1, total_steps=10)
    return model


def test_the_view_trains_each_convolution_the_way_the_kept_answers_say(
    kept: Path, measured: list[tuple]
) -> None:
    """fast's convolutions on maps of at most 64 pixels (7x7 and 3x3) are probed; the 15x15 and 31x31
    ones keep oneDNN's, as on every CPU measured. Answers written beforehand are followed as they are."""
    model = _fast()
    convs = {layer.name: layer for layer in model.layers if fastview.plain_3x3(layer)}
    wanted = {"block2_conv2": "matmuls", "block3_conv1": "oneDNN", "block3_conv2": "written out"}
    answers = {}
    for name, way in wanted.items():
        conv = convs[name]
        _, h, w, c = conv.input.shape
        key = convprobe.probe_key((h, w, c, conv.filters), "float32", 128, sorted(fastview.probe_ways(conv)))
        answers[key] = {"way": way, "ms": {}}
    kept.write_text(json.dumps(answers))
    view = fastview.for_training(model, batch=128)
    swapped = {layer.conv.name: type(layer).__name__ for layer in view.layers if hasattr(layer, "conv")}
    assert swapped == {"block2_conv2": "MatmulGradConv", "block3_conv2": "WrittenOutConv"}
    assert measured == []  # all three were kept
    # what a run keeps with its model: every 3x3 convolution's way, oneDNN's for the ones not swapped
    assert fastview.kernels(view) == {name: wanted.get(name, "oneDNN") for name in convs}
    assert fastview.kernels(model) == dict.fromkeys(convs, "oneDNN")
    assert [id(v) for v in view.trainable_variables] == [id(v) for v in model.trainable_variables]

    # Unkept: measured now, one probe per shape (block2_conv2 and block3_conv1 differ in filters).
    fastview.for_training(model, batch=32)
    assert sorted(call[0] for call in measured) == [(3, 3, 128, 128), (7, 7, 64, 64), (7, 7, 64, 128)]


def test_without_the_probe_the_rules_decide_and_nothing_is_timed(
    kept: Path, measured: list[tuple], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(precision, "cpu_flags", lambda: {"avx2", "fma"})  # the written-out rule's CPU
    monkeypatch.setenv(convprobe.ENV_PROBE, "0")
    view = fastview.for_training(_fast(), batch=64)
    assert [layer.conv.name for layer in view.layers if isinstance(layer, fastview.WrittenOutConv)] == [
        "block3_conv2"
    ]
    assert measured == [] and not kept.exists()
