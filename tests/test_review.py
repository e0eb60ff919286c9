"""The review page, its report and `reviewed --top`: token gate, labels with source `reviewed`, queues,
thumbnails under the home, metrics; and a real browser (Debian's chromium through Playwright)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image, ImageDraw, ImageFilter

from imgrank import config
from imgrank.cli import cli
from imgrank.order import ranked
from imgrank.store.db import open_db
from imgrank.store.labels import history, set_label
from imgrank.store.vectors import current_model_id

CHROMIUM = "/usr/bin/chromium"
# Every thumbnail in view has loaded (the grid loads the rest lazily, as they scroll in).
# (Written as functions: under the page's CSP, Playwright cannot eval a bare expression.)
THUMBS_SHOWN = """() => [...document.querySelectorAll('.tile img')]
    .filter(i => i.getBoundingClientRect().top < innerHeight)
    .every(i => i.complete && i.naturalWidth > 0)"""
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]


def scene(seed: int, shift: int = 0, size=(640, 480)) -> Image.Image:
    """A photo-like picture: sky and ground, a sun, a few shapes, a little noise."""
    rng = np.random.default_rng(seed)
    w, h = size
    sky, ground = rng.integers(60, 200, 3), rng.integers(30, 150, 3)
    y = np.linspace(0, 1, h)[:, None, None]
    arr = np.broadcast_to(
        np.where(y < 0.6, sky * (1 - 0.5 * y) + 80 * y, ground * (0.6 + 0.4 * y)), (h, w, 3)
    )
    img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(6):
        x0, y0 = int(rng.integers(0, w - 80)) + shift, int(rng.integers(h // 3, h - 60))
        box = [x0, y0, x0 + int(rng.integers(30, 120)), y0 + int(rng.integers(30, 90))]
        draw.ellipse(box, fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
    sx, sy = int(rng.integers(40, w - 40)), int(rng.integers(20, h // 3))
    draw.ellipse([sx, sy, sx + 50, sy + 50], fill=(255, 230, 120))
    noisy = np.asarray(img, float) + rng.normal(0, 6, (h, w, 3))
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


@pytest.fixture
def library(tmp_path, model_env):
    """A scanned folder: 14 photos, a burst of 3, an exact copy, a blurred, a dark and a tiny one."""
    root = tmp_path / "photos"
    root.mkdir()
    for i in range(14):
        scene(i).save(root / f"IMG_{1000 + i}.jpg", quality=90)
    for j in range(3):
        scene(100, shift=4 * j).save(root / f"burst_{j}.jpg", quality=90)
    (root / "copy_of_IMG_1000.jpg").write_bytes((root / "IMG_1000.jpg").read_bytes())
    scene(200).filter(ImageFilter.GaussianBlur(8)).save(root / "blurred.jpg")
    Image.eval(scene(201), lambda v: v // 9).save(root / "dark.jpg")
    scene(202).resize((120, 90)).save(root / "tiny.png")
    for args in (["scan", str(root)], ["dupes"]):
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 0 and result.exception is None, result.output
    return root


def logged_in(session):
    """A client of the page that logged in with a one-time code, as the browser does."""
    from starlette.testclient import TestClient

    from imgrank.review.server import Review, build_app

    client = TestClient(build_app(Review(), session), base_url="http://127.0.0.1")
    assert client.get(f"/login?code={session.one_time_code()}").status_code == 200
    return client


@pytest.fixture
def session():
    from imgrank.review.server import Session

    return Session()


@pytest.fixture
def client(library, session):
    return logged_in(session)


def test_nothing_is_served_without_the_session_cookie(library, session):
    from starlette.testclient import TestClient

    from imgrank.review.server import Review, build_app

    sha = logged_in(session).get("/api/queue/least-wanted").json()["items"][0]["sha256"]
    client = TestClient(build_app(Review(), session), base_url="http://127.0.0.1")
    for url in (
        "/",
        "/api/queue/least-wanted",
        f"/thumb/{sha}",
        f"/large/{sha}",
        "/api/metrics",
        "/favicon.ico",
        "/static/page.js",
    ):
        for suffix in ("", f"?token={session.cookie}", f"?code={session.key}"):
            response = client.get(url + suffix)
            assert response.status_code == 403, url + suffix
            assert "open the address" in response.text and "photos" not in response.text
        wrong = client.get(url, headers={"cookie": f"{session.cookie_name}=wrong"})
        assert wrong.status_code == 403
    assert client.post("/api/label", json={"sha256": sha, "label": "delete"}).status_code == 403
    assert not history(open_db())
    # A login code works once; the redirect file's key logs in again.
    code = session.one_time_code()
    assert client.get(f"/login?code={code}").status_code == 200 and client.get("/").status_code == 200
    again = TestClient(build_app(Review(), session), base_url="http://127.0.0.1")
    assert again.get(f"/login?code={code}").status_code == 403 and again.get("/").status_code == 403
    assert again.get(f"/login?key={session.key}").status_code == 200 and again.get("/").status_code == 200
    # Another host name (DNS rebinding) is refused even with the cookie, and so is a request that
    # another site's page made (CSRF, other ports of 127.0.0.1 included).
    assert client.get("/", headers={"host": "evil.example:80"}).status_code == 403
    for headers in (
        {"sec-fetch-site": "cross-site"},
        {"sec-fetch-site": "same-site"},
        {"origin": "http://127.0.0.1:9999"},
    ):
        response = client.post("/api/label", json={"sha256": sha, "label": "delete"}, headers=headers)
        assert response.status_code == 403
    assert not history(open_db())
    assert client.get("/").status_code == 200


def test_labels_from_the_page_land_with_source_reviewed_and_undo_goes_back(client):
    items = client.get("/api/queue/least-wanted").json()["items"]
    a, b = items[0]["sha256"], items[1]["sha256"]
    assert client.post("/api/label", json={"sha256": a, "label": "delete"}).json()["previous"] is None
    assert client.post("/api/label", json={"sha256": b, "label": "keep"}).status_code == 200
    undo = client.post("/api/label", json={"sha256": b, "label": None})
    assert undo.json()["previous"] == "keep"
    db = open_db()
    assert dict(db.execute("SELECT sha256, label || '/' || source FROM labels").fetchall()) == {
        a: "delete/reviewed"
    }
    assert [h["source"] for h in history(db)] == ["reviewed"] * 3
    # Labelled photos leave the least-wanted queue and show up as suspects.
    assert a not in {i["sha256"] for i in client.get("/api/queue/least-wanted").json()["items"]}
    assert a in {i["sha256"] for i in client.get("/api/queue/suspects").json()["items"]}
    bad = client.post("/api/label", json={"sha256": a, "label": "maybe"})
    assert bad.status_code == 400


def test_queues_thumbnails_and_why(client, library):
    before = sorted(p.name for p in library.iterdir())
    least = client.get("/api/queue/least-wanted").json()
    assert least["source"] == "prior"
    names = [i["name"] for i in least["items"]]
    assert set(names[:2]) == {"dark.jpg", "tiny.png"} and names.index("blurred.jpg") < len(names) / 2
    informative = client.get("/api/queue/informative?n=5").json()["items"]
    assert len(informative) == 5 and len({i["sha256"] for i in informative}) == 5
    bursts = client.get("/api/queue/bursts").json()["items"]
    copies = [i for i in bursts if i["kind"] == "exact copies"]
    assert {i["name"] for i in copies} == {"IMG_1000.jpg", "copy_of_IMG_1000.jpg"}
    assert sum(i["keeper"] for i in copies) == 1
    sha = least["items"][0]["sha256"]
    thumb = client.get(f"/thumb/{sha}")
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    large = client.get(f"/large/{sha}")
    assert large.status_code == 200 and len(large.content) > 1000
    why = client.get(f"/api/why/{sha}").json()
    assert why["source"] == "prior" and len(why["prior"]["prompts"]) == 3
    assert (config.home_dir() / "thumbs").is_dir()
    assert sorted(p.name for p in library.iterdir()) == before  # nothing written beside the photos
    assert client.get("/thumb/" + "0" * 64).status_code == 404


def test_retrain_from_the_page_then_metrics_show_the_run(client):
    import time

    items = client.get("/api/queue/least-wanted?n=20").json()["items"]
    for i, item in enumerate(items[:20]):
        label = "delete" if i < 10 else "keep"
        assert client.post("/api/label", json={"sha256": item["sha256"], "label": label}).is_success
    before = client.get("/api/metrics").json()["html"]
    assert "No training runs yet" in before and before.count("<svg") == 2  # PR curve, histograms
    assert client.post("/api/retrain").json()["running"]
    deadline = time.monotonic() + 120
    while (state := client.get("/api/retrain").json())["running"]:
        assert time.monotonic() < deadline
        time.sleep(0.5)
    assert "error" not in state and "run 1" in state["note"]
    after = client.get("/api/metrics").json()["html"]
    assert after.count("<svg") == 3 and "Confusion on validation" in after and "the head of run 1" in after
    assert client.get("/api/queue/least-wanted").json()["source"] == "head"


def test_report_is_one_self_contained_file(library, tmp_path):
    out = tmp_path / "report.html"
    result = CliRunner().invoke(cli, ["report", "--out", str(out)])
    assert result.exit_code == 0 and result.exception is None, result.output
    text = out.read_text()
    assert "<script" not in text and not re.search(r"""(src|href)=["']https?:""", text)
    assert text.count('src="data:image/jpeg;base64,') >= 20  # least-wanted alone has 20 photos
    for title in ("Least wanted", "Suspects", "Most informative", "Bursts", "Labels by source"):
        assert title in text


def test_reviewed_top_keeps_the_survivors(library):
    db = open_db()
    first = [r.path for r in ranked(db, 5)]
    os.remove(first[1])  # the owner deleted one of the five in their viewer
    result = CliRunner().invoke(cli, ["reviewed", "--top", "5", "--json"])
    assert result.exit_code == 0 and result.exception is None, result.output
    assert json.loads(result.output) == {"looked_at": 5, "kept": 4, "already_labelled": 0, "gone": 1}
    labels = db.execute("SELECT label, source, count(*) FROM labels GROUP BY 1, 2").fetchall()
    assert labels == [("keep", "reviewed", 4)]
    again = json.loads(CliRunner().invoke(cli, ["reviewed", "--top", "5", "--json"]).output)
    assert again["kept"] == 0 and again["already_labelled"] == 4


def test_reviewed_top_counts_what_the_viewer_showed_even_after_the_deletions_were_noticed(library):
    """The daemon (here a scan) has already marked the deleted photos missing: the first 5 of the
    order now would include two photos the owner never saw; those must not be labelled."""
    db = open_db()
    assert CliRunner().invoke(cli, ["order"]).exit_code == 0
    first = [r.path for r in ranked(db, 7)]
    os.remove(first[0])
    os.remove(first[3])
    assert CliRunner().invoke(cli, ["scan"]).exit_code == 0
    result = CliRunner().invoke(cli, ["reviewed", "--top", "5", "--json"])
    assert result.exit_code == 0 and result.exception is None, result.output
    assert json.loads(result.output) == {"looked_at": 5, "kept": 3, "already_labelled": 0, "gone": 2}
    kept = {
        p for (p,) in db.execute("SELECT f.path FROM labels JOIN files f USING (sha256) WHERE f.state = 'ok'")
    }
    assert kept == {first[1], first[2], first[4]}


@pytest.mark.slow
@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian's chromium (.ci/run installs it)")
def test_real_browser_labels_with_the_keyboard(library, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    shots = Path(os.environ.get("IMGRANK_SCREENSHOTS") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    server = subprocess.Popen(
        [sys.executable, "-m", "imgrank", "review", "--no-open"], stdout=subprocess.PIPE, text=True
    )
    try:
        url = server.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:") and "/login?code=" in url
        base = url.split("/login", 1)[0]
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(base + "/api/queue/least-wanted", timeout=10)
        assert refused.value.code == 403

        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 860})
            problems = []
            page.on("console", lambda m: problems.append(m.text) if m.type in ("error", "warning") else None)
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.on("response", lambda r: problems.append(f"{r.status} {r.url}") if r.status >= 400 else None)
            page.goto(url)
            tiles = page.locator(".tile")
            expect(tiles.first).to_be_visible()
            names = page.locator(".tile .name").all_inner_texts()
            page.wait_for_function(THUMBS_SHOWN)
            page.screenshot(path=str(shots / "review-least-wanted.png"))

            page.keyboard.press("d")  # first: delete
            expect(page.locator(".tile").nth(0).locator(".badge.delete")).to_be_visible()
            page.keyboard.press("k")  # second: keep
            expect(page.locator(".tile").nth(1).locator(".badge.keep")).to_be_visible()
            page.keyboard.press("u")  # undo the keep
            expect(page.locator(".tile").nth(1).locator(".badge")).to_have_count(0)
            page.keyboard.press("ArrowRight")
            page.keyboard.press("k")  # third: keep
            expect(page.locator(".tile").nth(2).locator(".badge.keep")).to_be_visible()
            page.keyboard.press(" ")
            expect(page.locator("#large")).to_be_visible()
            page.wait_for_function("() => document.querySelector('#large img').naturalWidth > 0")
            page.screenshot(path=str(shots / "review-large.png"))
            page.keyboard.press("Escape")

            for queue, label in (
                ("suspects", "Suspects"),
                ("informative", "Most informative"),
                ("bursts", "Bursts"),
            ):
                page.get_by_role("button", name=label).click()
                expect(page.locator("#status")).to_contain_text("photos")
                page.wait_for_function(THUMBS_SHOWN)
                if queue == "informative":  # the page says why each photo is offered
                    expect(page.locator("#detail .chosen")).to_contain_text("drawn at random")
                page.screenshot(path=str(shots / f"review-{queue}.png"))
            expect(page.locator(".group-start").first).to_contain_text("Group 1")
            page.get_by_role("button", name="Metrics").click()
            expect(page.locator(".metrics svg").first).to_be_visible()
            page.screenshot(path=str(shots / "review-metrics.png"), full_page=True)
            browser.close()
        assert problems == []

        db = open_db()
        by_name = {
            Path(path).name: (label, source)
            for path, label, source in db.execute(
                "SELECT f.path, l.label, l.source FROM labels l JOIN files f USING (sha256)"
            )
        }
        assert by_name == {names[0]: ("delete", "reviewed"), names[2]: ("keep", "reviewed")}
        assert {h["source"] for h in history(db)} == {"reviewed"}
    finally:
        server.terminate()
        server.wait(timeout=10)


def kinds_with_a_boundary(rng) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """16-d photos of five kinds with a quality axis q (the head's logit is 8 x q): kind 0 sits
    right on the boundary, kinds 1-3 spread across it, kind 4 is all confidently kept. Returns
    (vectors, kind of each, q)."""
    q = np.eye(16)[8]
    vectors, kind = [], []
    for k, (count, low, high) in enumerate(
        [(30, -0.02, 0.02), (40, -3, 3), (40, -3, 3), (40, -3, 3), (30, -4, -3)]
    ):
        centre = 3 * np.eye(16)[k]
        for t in np.linspace(low, high, count):
            noise = np.concatenate([np.zeros(9), 0.3 * rng.normal(size=7)])
            vectors.append(centre + t * q + noise)
            kind.append(k)
    vectors = np.array(vectors)
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32), np.array(kind), q


def test_the_informative_queue_picks_near_the_boundary_across_kinds(tmp_path):
    """On a real store with an imported head: the page is not the n most uncertain photos (all of
    kind 0), nor confident ones; it spreads over the kinds that straddle the boundary."""
    from helpers import store

    from imgrank import model, runs
    from imgrank.review.queues import informative

    vectors, kind, q = kinds_with_a_boundary(np.random.default_rng(0))
    db = open_db()
    shas = store(db, vectors)
    labelled = [i for k in range(4) for i in np.flatnonzero(kind == k)[[0, -1]]]  # none of kind 4
    for i in labelled:
        label = "delete" if vectors[i] @ q > 0 else "keep"
        assert set_label(db, shas[i], label, "user")
    spec = model.feature_spec(current_model_id(db), 16, 0)
    w = np.zeros((1, model.n_features(spec)))
    w[0, :16] = 8 * q
    weights = {"mean": np.zeros(w.shape[1]), "std": np.ones(w.shape[1]), "w0": w, "b0": np.zeros(1)}
    path = model.save_head(weights, {"feature_spec": spec, "n_layers": 1}, tmp_path / "head.st")
    assert runs.import_head(db, path)["activated"]
    p = 1 / (1 + np.exp(-8 * (vectors @ q)))
    row = {s: i for i, s in enumerate(shas)}

    page = informative(db, n=10, rule="badge")
    assert len(page) == 10 and len({i["sha256"] for i in page}) == 10
    assert not {i["sha256"] for i in page} & {shas[i] for i in labelled}
    uncertain = [row[i["sha256"]] for i in page if i["why_chosen"] == "uncertain"]
    assert len(uncertain) == 10
    naive = np.argsort(np.abs(p - 0.5))[:10]
    assert set(kind[naive]) == {0}  # the trap: the 10 most uncertain are all one kind
    assert len(set(kind[uncertain])) >= 3, kind[uncertain]  # spread over the kinds near the boundary
    assert np.median(np.abs(p[uncertain] - 0.5)) < 0.3, p[uncertain]  # mostly photos the head doubts...
    assert np.median(np.abs(p - 0.5)) > 0.4  # ...in a folder where most are confident
