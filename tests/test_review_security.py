"""The review page and heads closed to strangers (issue 22): a head is data, never markup; no secret in a
command line; requests a page would never send get a 4xx, never a 500.

The browser tests drive Debian's chromium through Playwright, as tests/test_review.py does."""

from __future__ import annotations

import json
import os
import pwd
import re
import secrets
import shutil
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from imgrank import model, runs
from imgrank.cli import cli
from imgrank.store.db import open_db
from imgrank.store.scores import active_run
from imgrank.store.vectors import current_model_id

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-sync"]
needs_chromium = pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason="needs Debian's chromium (.ci/run installs it)"
)
# Markup that runs script wherever it is parsed as HTML (innerHTML included): it sets window.pwned.
PAYLOAD = '<img src=x onerror="window.pwned=1"><svg onload="window.pwned=2"></svg>'


def hostile_metrics(ap=0.905) -> dict:
    """Held-out metrics as a hostile GPU host would return them: a normal-looking AP, markup elsewhere."""
    row = {"keep": PAYLOAD, "delete": 3}
    return {"active": {"ap": ap, "roc_auc": 0.93, "recipe": "mlp", "confusion": {"keep": row, "delete": row}}}


def write_head(db, path: Path, seed: int = 0, **meta) -> Path:
    """A linear head that fits the store's model and dims, with the metadata given."""
    model_id = current_model_id(db)
    from imgrank.store.vectors import store_dims

    spec = model.feature_spec(model_id, *store_dims(db, model_id))
    n = model.n_features(spec)
    rng = np.random.default_rng(seed)
    weights = {"mean": np.zeros(n), "std": np.ones(n), "w0": rng.normal(size=(1, n)), "b0": np.zeros(1)}
    return model.save_head(weights, {"feature_spec": spec, "n_layers": 1, **meta}, path)


@pytest.fixture
def small_store():
    from helpers import store

    db = open_db()
    store(db, np.random.default_rng(0).normal(size=(8, 16)).astype(np.float32))
    return db


def import_head(path: Path):
    return CliRunner().invoke(cli, ["model", "import", str(path)])


def refused_in_one_line(result) -> str:
    assert result.exit_code == 1 and isinstance(result.exception, (SystemExit, type(None))), result.output
    assert "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert re.search("not a (usable imgrank|safetensors) head", lines[0]), lines[0]
    return lines[0]


@pytest.mark.parametrize(
    ("meta", "words"),
    [
        ({"metrics": hostile_metrics()}, "metrics.active.confusion.keep.keep must be integer"),
        ({"metrics": {"active": {"ap": "0.9"}}}, "metrics.active.ap must be number or null"),
        ({"metrics": {"baseline": {"ap": 7}}}, "metrics.baseline.ap must be at most 1"),
        ({"calibration": {"a": 1, "b": "<b>"}}, "calibration.b must be number"),
        ({"recipe": "x" * 5000}, "recipe must be at most 4000 characters"),
        ({"warnings": ["<script>"] * 2000}, "warnings must have at most 1000 items"),
        ({"n_layers": True}, "n_layers must be integer"),
    ],
)
def test_a_head_whose_metadata_breaks_the_schema_is_refused_in_one_line(small_store, tmp_path, meta, words):
    line = refused_in_one_line(import_head(write_head(small_store, tmp_path / "head.st", **meta)))
    assert words in line and "<" not in line
    assert runs.list_runs(small_store) == []


def test_a_head_with_nan_in_its_metadata_is_refused(small_store, tmp_path):
    path = write_head(small_store, tmp_path / "head.st", metrics={"active": {"ap": float("nan")}})
    assert "not JSON with finite numbers" in refused_in_one_line(import_head(path))


def test_a_head_with_200000_prompts_or_huge_metadata_is_refused_quickly(small_store, tmp_path):
    from safetensors.numpy import load_file, save_file

    from imgrank import prior

    def with_prompts(n: int, path: Path) -> Path:
        texts = {"texts": ["a photo"] * n, "delete": [True] * n, "weights": [1.0] * n, "cues": {}, "scale": 1}
        spec = model.feature_spec(current_model_id(small_store), 16, 0)
        spec["prior"] = {"features": list(prior.HEAD_FEATURES), "prompts": texts}  # by hand: unchecked
        width = model.n_features(spec)
        weights = {
            "mean": np.zeros(width),
            "std": np.ones(width),
            "w0": np.ones((1, width)),
            "b0": np.zeros(1),
        }
        return model.save_head(weights, {"feature_spec": spec, "n_layers": 1}, path)

    deep = write_head(small_store, tmp_path / "deep.st")
    nested = json.dumps({**model.load_head(deep).meta, "nested": "HERE"}).replace(
        "HERE", "[" * 5000 + "]" * 5000
    )
    save_file(
        load_file(str(deep)), str(deep), metadata={"imgrank": nested.replace('"[', "[").replace(']"', "]")}
    )
    cases = [
        (with_prompts(200_000, tmp_path / "200k.st"), "its header says 4,800,"),
        (
            with_prompts(1001, tmp_path / "1001.st"),
            "feature_spec.prior.prompts.",
        ),
        (
            write_head(small_store, tmp_path / "huge.st", padding=["x" * 1000] * 1050),
            "more than the 1,048,576",
        ),
        (deep, "nested more than 16 deep"),
    ]
    for path, words in cases:
        started = time.monotonic()
        line = refused_in_one_line(import_head(path))
        assert time.monotonic() - started < 10, path
        assert words in line, line
    assert runs.list_runs(small_store) == []


def test_a_heads_own_worse_margin_is_ignored(small_store, tmp_path):
    good = write_head(small_store, tmp_path / "good.st", metrics={"active": {"ap": 0.9, "roc_auc": 0.9}})
    assert runs.import_head(small_store, good)["activated"]
    bad = write_head(
        small_store,
        tmp_path / "bad.st",
        seed=1,
        metrics={"active": {"ap": 0.01, "roc_auc": 0.6}},
        config={"worse_margin": 1.0},
    )
    result = import_head(bad)
    assert result.exit_code == 0 and result.exception is None, result.output
    assert "NOT activated" in result.output and "clearly below the active run 1" in result.output
    assert active_run(small_store)["id"] == 1


# --- requests the page would never send ---


@pytest.fixture
def client(small_store):
    from starlette.testclient import TestClient

    from imgrank.review.server import Review, Session, build_app

    session = Session()
    client = TestClient(build_app(Review(), session), base_url="http://127.0.0.1")
    assert client.get(f"/login?code={session.one_time_code()}").status_code == 200
    return client


def test_bad_requests_get_a_4xx_never_a_500(client):
    for n in ("abc", "-1", "0", "501", "1e3", "", "٣"):
        response = client.get(f"/api/queue/least-wanted?n={n}")
        assert response.status_code == 400, n
        assert "n must be a whole number from 1 to 500" in response.json()["error"]
    assert client.get("/api/queue/least-wanted?n=500").status_code == 200
    for body in (b"{", b"[]", b'"x"', b"[" * 4000, b'{"sha256": 5, "label": "keep"}', b'{"sha256": "a"}'):
        response = client.post("/api/label", content=body, headers={"content-type": "application/json"})
        assert response.status_code == 400, body[:20]
        assert response.json()["error"]
    huge = b'{"sha256": "' + b"a" * 5_000_000 + b'"}'
    response = client.post("/api/label", content=huge, headers={"content-type": "application/json"})
    assert response.status_code == 413 and "at most 4096 bytes" in response.json()["error"]
    page = client.get("/")
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert "<script>" not in page.text and "TOKEN" not in page.text


# --- a real server: no secret in a command line, bodies not read past the cap ---


def start_review(tmp_path: Path, browser: Path | None = None):
    """`imgrank review` in a process; returns (process, printed login url)."""
    env = {**os.environ}
    if browser:
        env["BROWSER"] = f"{browser} %s"
    args = ["review"] if browser else ["review", "--no-open"]
    server = subprocess.Popen(
        [sys.executable, "-m", "imgrank", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    url = server.stdout.readline().strip()
    assert url.startswith("http://127.0.0.1:"), server.stderr.read() if server.poll() is not None else url
    return server, url


def login(url: str) -> urllib.request.OpenerDirector:
    """A client that followed a login address (keeps the cookie it set)."""
    import http.cookiejar

    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
    opener.open(url, timeout=10).read()
    return opener


# Run as the other user: every address it can find in what `ps` showed (or in a file it names, if it can
# read it) is opened, then the queue is asked for with whatever that gave, the address's query included.
STRANGER = textwrap.dedent(
    """
    import http.cookiejar, json, re, sys, urllib.parse, urllib.request
    argv, got = sys.argv[1], []
    urls = re.findall(r"https?://[^\\s\\"'<>]+", argv)
    for path in re.findall(r"file://(\\S+)", argv):
        try:
            urls += re.findall(r"https?://[^\\s\\"'<>]+", open(urllib.parse.unquote(path)).read())
            got.append("read " + path)
        except OSError:
            pass
    for url in urls:
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
        parts = urllib.parse.urlsplit(url)
        for u in (url, f"{parts.scheme}://{parts.netloc}/api/queue/least-wanted?{parts.query}"):
            try:
                opener.open(u, timeout=10).read()
                got.append(u)
            except Exception:
                pass
    print(json.dumps(got))
    """
)


@pytest.fixture
def stranger():
    """A second local user, made for this test and removed after it."""
    if os.geteuid() != 0 or not shutil.which("useradd") or not Path("/usr/bin/python3").exists():
        pytest.skip("needs root (to add a second local user), useradd and /usr/bin/python3")
    name = f"imgrank-t{secrets.token_hex(3)}"
    subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name], check=True
    )
    try:
        yield pwd.getpwnam(name)
    finally:
        subprocess.run(["userdel", name], check=False)


@pytest.mark.slow
def test_another_local_user_gets_nothing_from_ps(library_like, tmp_path, stranger):
    """The browser's command line (what `ps` shows everyone) holds nothing another user can use; the
    owner's own browser logs in from it, and the printed address works once."""
    seen = tmp_path / "browser-argv"
    browser = tmp_path / "browser"
    browser.write_text(f'#!/bin/sh\nprintf "%s" "$*" > {seen}\n')
    browser.chmod(0o755)

    def as_stranger(address: str) -> subprocess.CompletedProcess:
        """The STRANGER script, run as the other local user, with what it read from `ps`."""
        return subprocess.run(
            ["/usr/bin/python3", "-c", STRANGER, address],
            user=stranger.pw_uid,
            group=stranger.pw_gid,
            extra_groups=[],
            cwd="/",
            capture_output=True,
            text=True,
            timeout=60,
        )

    server, printed = start_review(tmp_path, browser)
    try:
        deadline = time.monotonic() + 30
        while not seen.exists() or not seen.read_text():
            assert time.monotonic() < deadline and server.poll() is None, "the browser was not started"
            time.sleep(0.1)
        argv = seen.read_text()
        assert "token" not in argv and "code=" not in argv and "key=" not in argv, argv
        stranger_run = as_stranger(argv)
        assert stranger_run.returncode == 0, stranger_run.stderr
        assert json.loads(stranger_run.stdout) == []
        # The owner's browser: the file it was given is the owner's alone, and leads to the page.
        redirect = Path(argv.removeprefix("file://"))
        assert redirect.stat().st_mode & 0o777 == 0o600 and redirect.stat().st_uid == os.geteuid()
        login_url = re.search(r'url=([^"]+)"', redirect.read_text()).group(1)
        owner = login(login_url)
        base = printed.split("/login", 1)[0]
        assert json.loads(owner.open(base + "/api/queue/least-wanted", timeout=10).read())["items"]
        # The printed address works once: for the owner, not for whoever reads it after.
        login(printed)
        late = as_stranger(printed)
        assert json.loads(late.stdout) == []
        # A body far over the cap is refused at once, without waiting for (or reading) the rest.
        jar = [h for h in owner.handlers if hasattr(h, "cookiejar")][0].cookiejar
        cookie = next(iter(jar))
        port = int(base.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(
                (
                    f"POST /api/label HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                    f"Cookie: {cookie.name}={cookie.value}\r\n"
                    "Content-Type: application/json\r\nContent-Length: 300000000\r\n\r\n"
                ).encode()
                + b"{" * 1000
            )
            started = time.monotonic()
            answer = s.recv(4096).decode("latin-1")
            assert answer.startswith("HTTP/1.1 413"), answer[:200]
            assert time.monotonic() - started < 5
        assert server.poll() is None
    finally:
        server.terminate()
        server.wait(timeout=10)
    assert not redirect.exists()  # the file goes with the server


@pytest.fixture
def library_like(tmp_path, model_env):
    """A scanned folder of a few photos, one with markup in its name."""
    root = tmp_path / "photos"
    root.mkdir()
    rng = np.random.default_rng(0)
    names = [f"IMG_{i}.jpg" for i in range(10)] + ['<img src=x onerror="window.pwned=3">.jpg']
    for i, name in enumerate(names):
        pixels = rng.integers(0, 255, (96, 128, 3), dtype=np.uint8)
        pixels[: 10 * i] //= 2
        Image.fromarray(pixels).save(root / name, quality=90)
    for args in (["scan", str(root)], ["dupes"]):
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 0 and result.exception is None, result.output
    return root


# --- a head with markup in its metrics runs no script, in the page or in the report ---


@pytest.mark.slow
@needs_chromium
def test_markup_in_a_heads_metrics_runs_no_script_in_chromium(library_like, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    db = open_db()
    head = write_head(db, tmp_path / "hostile.st", metrics=hostile_metrics())
    refused_in_one_line(import_head(head))  # model import (and remote-train.sh's import) refuses it...
    # ...and a run that holds such metrics all the same (recorded by an older imgrank, which took them)
    # shows no markup from them, under a policy that would stop the script anyway.
    clean = write_head(db, tmp_path / "clean.st", seed=1, metrics={"active": {"ap": 0.905}})
    run = runs.import_head(db, clean, force=True)
    assert run["activated"]
    db.execute("UPDATE runs SET metrics = ? WHERE id = ?", [json.dumps(hostile_metrics()), run["id"]])
    db.commit()

    report = tmp_path / "report.html"
    result = CliRunner().invoke(cli, ["report", "--out", str(report)])
    assert result.exit_code == 0 and result.exception is None, result.output
    server, url = start_review(tmp_path)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            page = browser.new_page()
            page.goto(url)
            expect(page.locator(".tile").first).to_be_visible()
            expect(page.locator(".tile .name", has_text="onerror")).to_have_count(1)  # the name, as text
            page.get_by_role("button", name="Metrics").click()
            expect(page.locator("table.confusion")).to_be_visible()
            page.wait_for_timeout(500)
            assert page.evaluate("window.pwned") is None
            assert page.evaluate("typeof TOKEN") == "undefined"
            assert page.evaluate("document.cookie") == ""  # HttpOnly: no script reads the session
            assert "?" in page.locator("table.confusion").inner_text()  # not a count: not shown

            report_page = browser.new_page()
            report_page.goto(report.as_uri())
            expect(report_page.locator("table.confusion")).to_be_visible()
            report_page.wait_for_timeout(500)
            assert report_page.evaluate("window.pwned") is None
            assert report_page.locator("img[src^='data:image/jpeg']").count() >= 10  # thumbnails still show
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=10)


# --- any value anywhere in a head: refused in one line, or harmless where it is read ---

JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**30), 10**30)
    | st.floats(allow_nan=False)
    | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
PLACES = [
    ("n_layers",),
    ("calibration",),
    ("calibration", "a"),
    ("feature_spec", "image_dim"),
    ("feature_spec", "meta"),
    ("feature_spec", "prior"),
    ("metrics",),
    ("metrics", "active"),
    ("metrics", "active", "ap"),
    ("metrics", "active", "roc_auc"),
    ("metrics", "active", "confusion"),
    ("metrics", "active", "confusion", "keep"),
    ("metrics", "baseline", "ap"),
    ("metrics", "mlp"),
    ("metrics", "prior_features"),
    ("counts",),
    ("config",),
    ("config", "worse_margin"),
    ("warnings",),
    ("recipe",),
]


@given(place=st.sampled_from(PLACES), value=JSON)
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_any_value_anywhere_in_a_head_is_refused_in_one_line_or_read_safely(place, value):
    import tempfile

    from safetensors.numpy import save_file

    from imgrank.errors import ModelError
    from imgrank.review import metrics as tab

    meta = {
        "format": model.HEAD_FORMAT,
        "feature_spec": {"embed_model": "m", "image_dim": 4, "name_dim": 0, "meta": []},
        "n_layers": 1,
        "metrics": {"active": {"ap": 0.8, "roc_auc": 0.8}, "baseline": {"ap": 0.7}},
    }
    node = meta
    for key in place[:-1]:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            return
    node[place[-1]] = value
    weights = {"mean": np.zeros(4), "std": np.ones(4), "w0": np.ones((1, 4)), "b0": np.zeros(1)}
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "head.st"
        arrays = {k: np.asarray(v, np.float32) for k, v in weights.items()}
        save_file(arrays, str(path), metadata={"imgrank": json.dumps(meta)})
        try:
            head = model.load_head(path)
        except ModelError as e:
            assert "\n" not in str(e)
            return
    # Accepted: what activation, `model list`, the metrics tab and the report read from it is sound.
    previous = {"id": 1, "metrics": json.dumps(head.meta.get("metrics") or {})}
    runs.verdict(head.meta, previous)
    best = runs.headline(head.meta.get("metrics") or {})
    assert all(tab.number(best.get(k)) == best.get(k) for k in ("ap", "roc_auc") if best.get(k) is not None)
    table = tab.confusion_table(best.get("confusion"))
    assert "<" not in re.sub(r"</?(table|caption|tr|th|td|p)( class=\"confusion\")?>", "", table)
    head.predict(np.ones((2, 4), np.float32))


@pytest.mark.slow
@needs_chromium
def test_chromium_logs_in_from_the_redirect_file_and_the_printed_address_once(library_like, tmp_path, home):
    """What `imgrank review` opens the browser with: the owner-only file leads to the page (the Strict
    cookie survives the file -> /login -> / hops); the printed address works once."""
    from playwright.sync_api import expect, sync_playwright

    server, url = start_review(tmp_path)
    port = url.split(":")[2].split("/")[0]
    redirect = home / f"review-{port}-open.html"
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            first = browser.new_context().new_page()
            first.goto(redirect.as_uri())
            expect(first.locator(".tile").first).to_be_visible()
            assert first.url == f"http://127.0.0.1:{port}/"
            first.reload()  # the cookie, not the address, lets it in
            expect(first.locator(".tile").first).to_be_visible()
            again = browser.new_context().new_page()
            again.goto(url)
            expect(again.locator(".tile").first).to_be_visible()
            late = browser.new_context().new_page()  # another browser, the same printed address
            late.goto(url)
            expect(late.locator("body")).to_contain_text("forbidden")
            late.goto(f"http://127.0.0.1:{port}/")
            expect(late.locator("body")).to_contain_text("forbidden")
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=10)
