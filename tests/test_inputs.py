"""Crafted inputs end in one line, never a traceback: exports with NaN vectors or a damaged feature
spec (`train --data`), model configs missing keys or holding the wrong types; and file names made to
attack a terminal are printed with their control characters escaped."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from helpers import separable, store
from images import photo

from imgrank.cli import cli
from imgrank.export import SCHEMA_KEY
from imgrank.store.db import open_db


def one_line_refusal(result) -> str:
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    lines = [line for line in result.output.strip().splitlines() if line.startswith("Error:")]
    assert len(lines) == 1, result.output
    return lines[0]


@pytest.fixture
def export(tmp_path):
    """A real export of 80 labelled vectors (and the store's other photos, the library sample)."""
    db = open_db()
    x, y = separable(80, seed=5)
    store(db, x, y)
    store(db, separable(40, seed=6)[0])
    path = tmp_path / "labels.parquet"
    result = CliRunner().invoke(cli, ["export", str(path)])
    assert result.exit_code == 0, result.output
    return path


def rewrite(path, change_table=None, change_spec=None, raw_spec: bytes | None = None):
    """The export at `path`, with its table and/or its feature spec changed, written back."""
    table = pq.read_table(path)
    if change_table:
        table = change_table(table)
    meta = dict(table.schema.metadata or {})
    spec = json.loads(meta[SCHEMA_KEY])
    if change_spec:
        spec = change_spec(spec)
    meta[SCHEMA_KEY] = raw_spec if raw_spec is not None else json.dumps(spec).encode()
    pq.write_table(table.replace_schema_metadata(meta), path)
    return path


def train_data(path, tmp_path):
    head = tmp_path / "head.safetensors"
    result = CliRunner().invoke(cli, ["train", "--data", str(path), "--out", str(head), "--epochs", "2"])
    return result, head


def with_image(table, values: np.ndarray):
    dim = table.schema.field("image").type.list_size
    flat = pa.array(values.astype(np.float32).ravel(), pa.float32())
    column = pa.FixedSizeListArray.from_arrays(flat, dim)
    return table.set_column(table.schema.get_field_index("image"), "image", column)


def image_matrix(table) -> np.ndarray:
    flat = table.column("image").combine_chunks().flatten().to_numpy(zero_copy_only=False)
    return np.array(flat, np.float32).reshape(table.num_rows, -1)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_train_data_refuses_non_finite_vectors(export, tmp_path, bad):
    def poison(table):
        m = image_matrix(table)
        m[3, 2] = bad
        return with_image(table, m)

    result, head = train_data(rewrite(export, change_table=poison), tmp_path)
    line = one_line_refusal(result)
    assert "image vectors hold non-finite numbers" in line
    assert not head.exists()


def test_train_data_refuses_a_nan_in_the_library_sample_too(export, tmp_path):
    def poison(table):
        m = image_matrix(table)
        unlabelled = [i for i, v in enumerate(table.column("label").to_pylist()) if v is None]
        m[unlabelled[0], 0] = np.nan
        return with_image(table, m)

    result, head = train_data(rewrite(export, change_table=poison), tmp_path)
    assert "non-finite" in one_line_refusal(result) and not head.exists()


CRAFTED_SPECS = {
    "not JSON": (dict(raw_spec=b"{not json"), "not JSON"),
    "a list": (dict(change_spec=lambda s: [s]), "not a JSON object"),
    "no image_dim": (
        dict(change_spec=lambda s: {k: v for k, v in s.items() if k != "image_dim"}),
        "image_dim",
    ),
    "image_dim a string": (dict(change_spec=lambda s: {**s, "image_dim": "16"}), "image_dim"),
    "image_dim huge": (dict(change_spec=lambda s: {**s, "image_dim": 10**12}), "image_dim"),
    "name_dim negative": (dict(change_spec=lambda s: {**s, "name_dim": -1}), "name_dim"),
    "meta not a list": (dict(change_spec=lambda s: {**s, "meta": "log_bytes"}), "meta must list"),
    "unknown meta": (dict(change_spec=lambda s: {**s, "meta": ["__class__"]}), "meta must list"),
    "embed_model a number": (dict(change_spec=lambda s: {**s, "embed_model": 3}), "embed_model"),
    "prior not a dict": (dict(change_spec=lambda s: {**s, "prior": "yes"}), "prior feature spec"),
    "vectors narrower than the spec": (dict(change_spec=lambda s: {**s, "image_dim": 12}), "damaged columns"),
    "no image column": (dict(change_table=lambda t: t.drop_columns(["image"])), "columns missing: image"),
    "labels that are not labels": (
        dict(change_table=lambda t: t.set_column(1, "label", pa.array(["maybe"] * t.num_rows))),
        "damaged columns",
    ),
    "image column of strings": (
        dict(change_table=lambda t: t.set_column(2, "image", pa.array(["x"] * t.num_rows))),
        "damaged columns",
    ),
}


@pytest.mark.parametrize("case", sorted(CRAFTED_SPECS))
def test_a_crafted_export_is_one_line(export, tmp_path, case):
    change, words = CRAFTED_SPECS[case]
    result, head = train_data(rewrite(export, **change), tmp_path)
    line = one_line_refusal(result)
    assert words in line, line
    assert not head.exists()


def test_the_real_export_still_trains(export, tmp_path):
    result, head = train_data(export, tmp_path)
    assert result.exit_code == 0 and result.exception is None, result.output
    assert head.exists()


def without(d: dict, key: str) -> dict:
    return {k: v for k, v in d.items() if k != key}


CRAFTED_CONFIGS = {
    "not JSON": (lambda c: "{", "not a readable model config"),
    "a list": (lambda c: [c], "no 'image_encoder' section"),
    "no embedding_dim": (
        lambda c: {**c, "image_encoder": without(c["image_encoder"], "embedding_dim")},
        "image_encoder.embedding_dim must be a whole number",
    ),
    "embedding_dim a string": (
        lambda c: {**c, "text_encoder": {**c["text_encoder"], "embedding_dim": "64"}},
        "text_encoder.embedding_dim must be a whole number",
    ),
    "embedding_dim true": (
        lambda c: {**c, "image_encoder": {**c["image_encoder"], "embedding_dim": True}},
        "image_encoder.embedding_dim",
    ),
    "no text_encoder": (lambda c: {"image_encoder": c["image_encoder"]}, "no 'text_encoder' section"),
    "no max_position_embeddings": (
        lambda c: {**c, "text_encoder": without(c["text_encoder"], "max_position_embeddings")},
        "text_encoder.max_position_embeddings",
    ),
    "a trillion positions": (
        lambda c: {**c, "text_encoder": {**c["text_encoder"], "max_position_embeddings": 10**12}},
        "text_encoder.max_position_embeddings",
    ),
    "padding_idx a list": (
        lambda c: {**c, "text_encoder": {**c["text_encoder"], "padding_idx": [0]}},
        "text_encoder.padding_idx",
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(CRAFTED_CONFIGS))
def test_a_crafted_model_config_is_one_line(tiny_model, tmp_path, monkeypatch, case):
    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    change, words = CRAFTED_CONFIGS[case]
    crafted = change(json.loads((model / "config.json").read_text()))
    (model / "config.json").write_text(crafted if isinstance(crafted, str) else json.dumps(crafted))
    monkeypatch.setenv("IMGRANK_MODEL", str(model))
    photo(tmp_path / "photos" / "a.jpg")
    result = CliRunner().invoke(cli, ["scan", str(tmp_path / "photos")])
    line = one_line_refusal(result)
    assert words in line, line


# A name that, printed raw, sets the terminal's title, clears the screen and hides what came before.
EVIL = "IMG_\x1b]0;pwned\x07\x1b[2J\rfine\u202egpj.jpg"
SHOWN = "IMG_\\x1b]0;pwned\\x07\\x1b[2J\\x0dfine\\u202egpj.jpg"


def no_escapes(text: str) -> None:
    assert not any(c in text for c in "\x1b\x07\r\u202e"), repr(text)


def test_names_are_printed_with_control_characters_escaped(tmp_path, model_env):
    root = tmp_path / ("photos\x1b[31m")
    evil = photo(root / EVIL, seed=1)
    shutil.copy(evil, root / (EVIL + ".copy.jpg"))  # an exact copy: a group for dupes
    for i in range(4):
        photo(root / f"plain_{i}.jpg", seed=10 + i)
    (root / "bad\x1b[5m.jpg").write_bytes(b"not an image")

    def run(*args):
        result = CliRunner().invoke(cli, list(args))
        assert result.exit_code == 0 and result.exception is None, result.output
        no_escapes(result.output)  # stdout and stderr alike
        return result

    run("scan", str(root))
    assert SHOWN in run("top", "-n", "10").stdout
    assert SHOWN in run("dupes").stdout
    run("relabel", "delete", str(evil))
    assert SHOWN in run("labels").stdout
    assert "bad\\x1b[5m.jpg" in run("status", "--unreadable").stdout
    assert "photos\\x1b[31m" in run("status").stdout and "photos\\x1b[31m" in run("roots", "list").stdout
    assert SHOWN in run("order", "--dry-run").stdout
    # --json keeps the exact name, escaped the JSON way
    assert str(evil) in [r["path"] for r in json.loads(run("top", "-n", "10", "--json").stdout)]


def test_an_error_naming_a_file_is_printed_escaped(tmp_path):
    folder = tmp_path / "not\x1b[2Ja root"
    folder.mkdir()
    result = CliRunner().invoke(cli, ["roots", "remove", str(folder)])
    line = one_line_refusal(result)
    no_escapes(result.output)
    assert "not\\x1b[2Ja root" in line


def test_printable_leaves_ordinary_names_alone():
    from imgrank.files import shown_path

    for name in ("Ferien 2024/Strand.jpg", "été/Ωμέγα 😀.heic", "日本/写真.png"):
        assert shown_path(name) == name
    assert shown_path(os.fsdecode(b"caf\xe9.jpg")) == "caf\ufffd.jpg"


def test_the_daemons_log_lines_are_printed_escaped():
    import logging

    from imgrank.cli import PrintableFormatter

    record = logging.LogRecord("imgrank.daemon", logging.INFO, __file__, 1, "deleted: %s", (EVIL,), None)
    line = PrintableFormatter("%(levelname)s %(message)s").format(record)
    assert line == f"INFO deleted: {SHOWN}"
