"""export-vectors / import-vectors: a backlog embedded elsewhere (a GPU machine) lands in the home store."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from images import photo

from imgrank.cli import cli
from imgrank.store.db import from_blob, open_db
from imgrank.testing.tinymodel import build_model
from imgrank.vectorfile import META_KEY


def run(*args, code=0):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert result.exit_code == code, result.output
    if code == 0:
        assert result.exception is None
    return result.output


def store_vectors() -> dict[str, np.ndarray]:
    db = open_db()
    return {sha: from_blob(blob) for sha, blob in db.execute("SELECT sha256, vector FROM vectors")}


@pytest.fixture
def gpu_export(model_env, tmp_path, monkeypatch):
    """Photos embedded in another store with the torch encoder (as on a GPU machine), exported."""
    for i in range(8):
        photo(tmp_path / "backlog" / f"IMG_{i:03d}.jpg", seed=i)
    monkeypatch.setenv("IMGRANK_HOME", str(tmp_path / "gpu-box"))
    assert json.loads(run("scan", tmp_path / "backlog", "--device", "cpu", "--json"))["embedded"] == 8
    made = store_vectors()
    out = json.loads(run("export-vectors", tmp_path / "vectors.parquet", "--json"))
    assert out["vectors"] == 8 and out["dim"] == 64
    monkeypatch.setenv("IMGRANK_HOME", str(tmp_path / "home"))
    return tmp_path / "vectors.parquet", made


def test_imported_vectors_spare_the_home_scan_all_decoding(gpu_export, tmp_path):
    path, made = gpu_export
    # The same photos at home, under other names and folders: content is what counts.
    (tmp_path / "pictures").mkdir()
    for i in range(8):
        shutil.copy(tmp_path / "backlog" / f"IMG_{i:03d}.jpg", tmp_path / "pictures" / f"{i}.jpg")
    assert "8 vectors of tiny-model" in run("import-vectors", path)
    assert "0 vectors of tiny-model" in run("import-vectors", path)  # again: nothing new, nothing doubled
    summary = json.loads(run("scan", tmp_path / "pictures", "--json"))
    assert summary["new"] == 8 and summary["embedded"] == 0  # nothing decoded or embedded here
    home = store_vectors()
    assert home.keys() == made.keys()
    assert all(np.array_equal(home[s], made[s]) for s in made)


def test_another_models_vectors_are_refused(gpu_export, tmp_path):
    path, _ = gpu_export
    other = build_model(tmp_path / "other-model", seed=1)
    out = run("import-vectors", path, "--model", other, code=1)
    assert "holds vectors of tiny-model" in out and "other-model@" in out
    assert store_vectors() == {}


def write(path, rows, meta, vector_type=None):
    shas, vecs = zip(*rows, strict=True)
    table = pa.table({"sha256": list(shas), "vector": pa.array([list(v) for v in vecs], vector_type)})
    metadata = {META_KEY: json.dumps(meta).encode()} if meta else None
    pq.write_table(table.replace_schema_metadata(metadata), path)


@pytest.mark.parametrize(
    ("rows", "meta", "message"),
    [
        ([("a" * 64, [0.1] * 64)], None, "is not an imgrank vectors file"),
        ([("a" * 64, [0.1] * 64), ("b" * 64, [0.1] * 63)], {"dim": 64}, "not 64-d"),
        ([("a" * 64, [0.1] * 64), ("IMG_0001.jpg", [0.1] * 64)], {"dim": 64}, "not 64 lower-case hex"),
        ([("a" * 64, [0.1] * 64), ("b" * 64, [float("nan")] * 64)], {"dim": 64}, "NaN"),
        ([("a" * 64, [0.1] * 64)], {"dim": 64, "format": 9}, "format 9"),
        ([("a" * 64, [0.1] * 64)], {"dim": "64"}, "damaged metadata"),
        ([("a" * 64, [0.1] * 64)], {"dim": 10**12}, "damaged metadata"),
        ([("a" * 64, [0.1] * 64)], {"model": ["tiny"]}, "damaged metadata"),
        ([("a" * 64, ["x"] * 64)], {"dim": 64}, "not lists of numbers"),
    ],
)
def test_a_bad_file_is_one_clear_line_and_imports_nothing(gpu_export, tmp_path, rows, meta, message):
    path, made = gpu_export
    model = pq.read_schema(path).metadata[META_KEY]
    run("import-vectors", path)  # the good vectors: the bad file must not add to them or change them
    if meta is not None:
        meta = {**json.loads(model), **meta}
    bad = tmp_path / "bad.parquet"
    write(bad, rows, meta)
    assert message in run("import-vectors", bad, code=1)
    assert store_vectors().keys() == made.keys()
