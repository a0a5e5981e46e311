"""`jupyter cifar models …` and store REFs in train / evaluate / classify (real processes, real stores)."""

from __future__ import annotations

import json
import time
import zipfile
from pathlib import Path

import pytest
from mongod import free_port
from storetools import add_orphan, lose_file, tiny_model, tiny_model_file
from test_cli import assert_one_line_error, cli

from jupyter_cifar.store import open_store

pytestmark = pytest.mark.slow

RECORD_KEYS = {"name", "version", "created", "sha256", "size", "aliases", "tags", "test_accuracy"}


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("store")


@pytest.fixture(scope="module")
def trained(cifar10, cifar10_dir: Path, store_dir: Path) -> dict:
    proc = cli(
        "train", "--preset", "tutorial", "--epochs", "1", "--train-limit", "1000", "--test-limit", "300",
        "--seed", "1", "--data", cifar10_dir, "--store", store_dir, "--save", "cnn",
        "--tag", "data=jpeg", "--notes", "first", "--json",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def models(store: Path | str, *args: object) -> tuple[int, object, str]:
    proc = cli("models", *args, "--store", store, "--json")
    return proc.returncode, json.loads(proc.stdout) if proc.stdout else None, proc.stderr


def test_train_saves_versions_into_the_store(trained: dict, store_dir: Path) -> None:
    assert trained["name"] == "cnn" and trained["version"] == 1
    status, record, _ = models(store_dir, "show", "cnn:1")
    assert status == 0 and set(record) >= RECORD_KEYS
    assert record["test_accuracy"] == trained["test_accuracy"]
    assert record["tags"] == {"data": "jpeg"} and record["notes"] == "first"
    meta = record["metadata"]
    assert meta["preset"] == "tutorial" and meta["hyperparameters"]["seed"] == 1
    assert len(meta["history"]) == 1 and meta["dataset"]["n_train"] == 1000
    assert len(meta["per_class_accuracy"]) == 10 and meta["class_names"][0] == "airplane"


def test_evaluate_and_classify_resolve_store_refs(trained: dict, store_dir: Path, cifar10_dir: Path) -> None:
    status, _, _ = models(store_dir, "alias", "cnn:1", "prod")
    assert status == 0
    proc = cli(
        "evaluate", "cnn@prod", "--store", store_dir, "--data", cifar10_dir, "--test-limit", "300", "--json"
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["accuracy"] == pytest.approx(trained["test_accuracy"], abs=1e-6)
    image = cifar10_dir / "test" / "ship" / "0000.jpg"
    proc = cli("classify", "cnn", image, "--store", store_dir, "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)[0]["ok"] is True
    proc = cli("classify", "cnn:9", image, "--store", store_dir)
    assert_one_line_error(proc, 2, "'cnn' has no version 9")


def test_manage_versions(trained: dict, store_dir: Path, tmp_path: Path) -> None:
    h5 = tmp_path / "old.h5"
    tiny_model().save(h5)
    status, record, err = models(store_dir, "import", h5, "--name", "cnn", "--tag", "source=h5")
    assert status == 0, err
    assert record["version"] == 2 and record["metadata"]["imported_format"] == "h5"
    status, listed, _ = models(store_dir, "list", "--name", "cnn")
    assert [r["version"] for r in listed] == [2, 1] and all(set(r) >= RECORD_KEYS for r in listed)
    status, record, _ = models(store_dir, "tag", "cnn:2", "reviewed=yes", "source=")
    assert record["tags"] == {"reviewed": "yes"}
    status, record, _ = models(store_dir, "note", "cnn:2", "converted from the seed's h5")
    assert record["notes"] == "converted from the seed's h5"
    status, listed, _ = models(store_dir, "list", "--tag", "reviewed=yes")
    assert [r["version"] for r in listed] == [2]
    out = tmp_path / "exported.keras"
    status, record, _ = models(store_dir, "export", "cnn:2", out)
    assert status == 0 and zipfile.is_zipfile(out)
    proc = cli("models", "delete", "cnn", "--store", store_dir)
    assert_one_line_error(proc, 2, "--all")
    status, deleted, _ = models(store_dir, "delete", "cnn:2")
    assert status == 0 and [d["version"] for d in deleted] == [2]
    status, listed, _ = models(store_dir, "list")
    assert [f"{r['name']}:{r['version']}" for r in listed] == ["cnn:1"]


def test_delete_all_versions(store_dir: Path, tmp_path: Path) -> None:
    path = tmp_path / "m.keras"
    tiny_model().save(path)
    for _ in range(2):
        assert models(store_dir, "import", path, "--name", "doomed")[0] == 0
    status, deleted, _ = models(store_dir, "delete", "doomed", "--all")
    assert status == 0 and sorted(d["version"] for d in deleted) == [1, 2]
    assert_one_line_error(cli("models", "show", "doomed", "--store", store_dir), 2, "no model named 'doomed'")


def test_text_output_is_a_table(trained: dict, store_dir: Path) -> None:
    proc = cli("models", "list", "--store", store_dir)
    assert proc.returncode == 0
    header, *rows = proc.stdout.splitlines()
    assert header.split()[:3] == ["REF", "ALIASES", "ACCURACY"]
    assert any(row.startswith("cnn:1") for row in rows)


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["show", "../etc"], ["REF", "'../etc'"]),
        (["import", "README.md", "--name", "x"], ["PATH", "README.md"]),
        (["alias", "cnn:1", "latest"], ["alias", "reserved"]),
        (["tag", "cnn:1", "novalue"], ["tag", "KEY=VALUE"]),
        (["list", "--sort", "password"], ["sort", "password"]),
    ],
)
def test_bad_store_parameters_exit_2(
    trained: dict, store_dir: Path, args: list[str], words: list[str]
) -> None:
    assert_one_line_error(cli("models", *args, "--store", store_dir), 2, *words)


def test_an_unreachable_store_exits_3_naming_the_host_not_the_password() -> None:
    port = free_port()  # nothing listens there
    start = time.monotonic()
    proc = cli("models", "list", "--store", f"mongodb://ana:s3cret@127.0.0.1:{port}/models")
    assert time.monotonic() - start < 30  # seconds, not the driver's 30 s default per operation
    assert_one_line_error(proc, 3, f"127.0.0.1:{port}")
    assert "s3cret" not in proc.stderr


def test_seed_documents_come_in_with_one_command(mongod, store_dir: Path, tmp_path: Path) -> None:
    import pymongo
    from bson import Binary

    h5 = tmp_path / "modelo.h5"
    tiny_model().save(h5)  # what the seed did: model.save("...h5"), then insert_one of the bytes
    client: pymongo.MongoClient = pymongo.MongoClient(mongod.uri)
    db = client["okteto"]
    db["modelos"].insert_one({"nome": "cnn", "modelo": Binary(h5.read_bytes())})
    db["modelos"].insert_one({"nome": "quebrado", "modelo": Binary(b"\x89HDF\r\n\x1a\n" + b"\0" * 64)})
    db["outros"].insert_one({"texto": "nada aqui"})
    client.close()
    proc = cli(
        "models", "import-seed", f"{mongod.uri}/okteto", "--name", "seed", "--store", store_dir, "--json"
    )
    assert proc.returncode == 1, proc.stderr  # one document could not be imported; the other was
    report = json.loads(proc.stdout)
    assert [r["version"] for r in report["imported"]] == [1]
    assert "okteto.modelos" in report["imported"][0]["metadata"]["imported_from"]
    assert report["imported"][0]["tags"] == {"source": "seed"}
    assert len(report["skipped"]) == 1 and "cannot be read as a model file" in report["skipped"][0]["error"]
    status, record, _ = models(store_dir, "show", "seed")
    assert status == 0 and record["metadata"]["imported_format"] == "h5"
    # The seed divided pixels by 255 before training; the stored model takes 0..255 like every model here.
    assert "Rescaling(1/255)" in record["metadata"]["input_scaling"]
    import keras
    import numpy as np

    pixels = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3)).astype("float32")
    seed_model = keras.saving.load_model(h5, compile=False)
    imported = open_store(str(store_dir)).load("seed:1")
    np.testing.assert_allclose(
        imported.predict(pixels, verbose=0), seed_model.predict(pixels / 255, verbose=0), atol=1e-5
    )

    proc = cli(
        "models",
        "import-seed",
        f"{mongod.uri}/okteto",
        "--collection",
        "modelos",
        "--name",
        "as-is",
        "--no-rescale",
        "--store",
        store_dir,
        "--json",
    )
    as_is = json.loads(proc.stdout)["imported"][0]
    assert "input_scaling" not in as_is["metadata"]


# -- models check ------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["local", "mongo"])
def test_check_reports_damage_exits_1_and_repair_fixes_it(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    uri = str(tmp_path / "store") if backend == "local" else request.getfixturevalue("mongo_uri")
    source = tiny_model_file(tmp_path / "m.keras")
    with open_store(uri) as store:
        for _ in range(3):
            store.save_file(source, "m")
        lose_file(store, store.resolve("m:2"))
        add_orphan(store, source)

    status, report, err = models(uri, "check", "--grace", "0")
    assert status == 1, err
    assert set(report) == {"ok", "store", "checked", "in_progress", "problems"}
    assert report["ok"] is False and report["checked"] == 3
    assert sorted((p["kind"], p["name"], p["version"], p["repaired"]) for p in report["problems"]) == [
        ("missing", "m", 2, False),
        ("orphan", None, None, False),
    ]
    proc = cli("models", "check", "--grace", "0", "--store", uri)
    assert proc.returncode == 1 and "models lost: m:2" in proc.stdout and "--repair" in proc.stdout

    status, report, err = models(uri, "check", "--repair", "--grace", "0")
    assert status == 0, err
    assert report["ok"] is True and all(p["repaired"] for p in report["problems"])
    proc = cli("models", "check", "--store", uri)
    assert proc.returncode == 0 and proc.stdout.strip().endswith(": consistent"), proc.stdout
    status, listed, _ = models(uri, "list")
    assert sorted(r["version"] for r in listed) == [1, 3]


def test_check_leaves_fresh_mongodb_leftovers_to_the_grace_period(mongo_uri: str, tmp_path: Path) -> None:
    source = tiny_model_file(tmp_path / "m.keras")
    with open_store(mongo_uri) as store:
        store.save_file(source, "m")
        add_orphan(store, source)  # as a save between its upload and its record would look
    status, report, _ = models(mongo_uri, "check", "--repair")
    assert status == 0 and report["problems"] == [] and report["in_progress"] == 1
    proc = cli("models", "check", "--store", mongo_uri)
    assert proc.returncode == 0 and "1 leftover(s) young enough" in proc.stdout


def test_check_of_an_unreachable_store_exits_3_and_bad_grace_exits_2(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    assert_one_line_error(
        cli("models", "check", "--store", f"mongodb://127.0.0.1:{port}/models"), 3, f"127.0.0.1:{port}"
    )
    assert_one_line_error(cli("models", "check", "--grace", "-1", "--store", tmp_path), 2, "--grace")
