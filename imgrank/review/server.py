"""The review page's server: Starlette on uvicorn, on 127.0.0.1, nothing served without the session cookie.

Every decision goes through labels.set_label with source `reviewed`, the same history `relabel`
writes. The page never deletes, moves or rewrites a photo: "delete" is a label.

Who may use it (see docs/security.md): the session is an HttpOnly, SameSite=Strict cookie that no page
script can read. It is set by `/login` for a one-time code (the address `imgrank review` prints, good
once) or for the key in a redirect file only the owner can read (what the browser is opened with, so
no command line carries a secret). Every response carries a strict Content-Security-Policy.
"""

from __future__ import annotations

import hmac
import json
import re
import secrets
import signal
import socket
import sys
import threading
from importlib import resources
from pathlib import Path
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from imgrank import dupes, thumbs, trash
from imgrank.errors import ImgrankError
from imgrank.review import metrics, queues
from imgrank.review.login import open_file
from imgrank.review.queues import queue
from imgrank.store.db import open_db
from imgrank.store.labels import current_label, label_counts, set_label
from imgrank.store.scores import score_source
from imgrank.train import TrainConfig, train
from imgrank.trash import chosen

FORBIDDEN = (
    "forbidden: open the address `imgrank review` printed (it works once) or the file it names "
    "(it logs you in again)"
)
# No inline script or style, nothing from elsewhere: one missed escape cannot run.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
]
MAX_BODY = 4096  # a label is under 100 bytes
MAX_N = 500  # most photos one queue request returns
STATIC = {"page.js": "text/javascript", "page.css": "text/css", "icon.svg": "image/svg+xml"}
SHA256 = re.compile(r"[0-9a-f]{64}")
# The page /login answers: it sets the cookie, then the page itself moves on to "/" (a same-site
# navigation, so the Strict cookie goes with it even when the login came from a file or a link).
LOGGED_IN = (
    '<!doctype html><meta charset="utf-8"><meta http-equiv="refresh" content="0;url=/">'
    '<link rel="icon" href="/static/icon.svg"><title>imgrank review</title>'
    '<p><a href="/">Open imgrank review</a></p>'
)


class Session:
    """The secrets of one running page: the cookie's value, the redirect file's reusable key and the
    one-time login codes."""

    def __init__(self, cookie_name: str = "imgrank"):
        self.cookie_name = cookie_name
        self.cookie = secrets.token_urlsafe(32)
        self.key = secrets.token_urlsafe(32)
        self._codes: set[str] = set()
        self._lock = threading.Lock()

    def one_time_code(self) -> str:
        code = secrets.token_urlsafe(32)
        with self._lock:
            self._codes.add(code)
        return code

    def redeem(self, query: dict) -> bool:
        """True for the redirect file's key, or for a one-time code not used before (it is used now)."""
        key, code = query.get("key", [""])[0], query.get("code", [""])[0]
        if key and hmac.compare_digest(key.encode(), self.key.encode()):
            return True
        with self._lock:
            if code and code in self._codes:
                self._codes.discard(code)
                return True
        return False

    def holds_cookie(self, headers: dict) -> bool:
        jar = headers.get(b"cookie", b"").decode("latin-1")
        values = [
            v for k, _, v in (c.strip().partition("=") for c in jar.split(";")) if k == self.cookie_name
        ]
        return any(hmac.compare_digest(v.encode(), self.cookie.encode()) for v in values)

    def set_cookie(self) -> bytes:
        return f"{self.cookie_name}={self.cookie}; Path=/; HttpOnly; SameSite=Strict".encode()


class SessionGate:
    """ASGI wrapper in front of every route. Refused with 403 and nothing else: another host than the
    loopback one we are bound to (DNS rebinding), a request another site's page started (CSRF from
    any origin, other ports of 127.0.0.1 included), and anything but /login without the cookie.
    Adds the security headers to every response."""

    def __init__(self, app, session: Session):
        self.app, self.session = app, session

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_secured(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *SECURITY_HEADERS]}
            await send(message)

        headers = dict(scope.get("headers") or [])
        host = headers.get(b"host", b"").decode("latin-1")
        if host.rsplit(":", 1)[0] not in ("127.0.0.1", "localhost"):
            await _forbidden(scope, receive, send_secured)
        elif scope["path"] == "/login":
            await self._login(scope, receive, send_secured)
        elif not self._same_origin(headers, host) or not self.session.holds_cookie(headers):
            await _forbidden(scope, receive, send_secured)
        else:
            await self.app(scope, receive, send_secured)

    async def _login(self, scope, receive, send):
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        if not self.session.redeem(query):
            await _forbidden(scope, receive, send)
            return
        response = HTMLResponse(LOGGED_IN, headers={"Cache-Control": "no-store"})
        response.raw_headers.append((b"set-cookie", self.session.set_cookie()))
        await response(scope, receive, send)

    @staticmethod
    def _same_origin(headers: dict, host: str) -> bool:
        """False for a request a page of another origin made (the browser says so)."""
        site = headers.get(b"sec-fetch-site", b"none").decode("latin-1")
        origin = headers.get(b"origin", b"").decode("latin-1")
        return site in ("same-origin", "none") and origin in ("", f"http://{host}")


async def _forbidden(scope, receive, send) -> None:
    await PlainTextResponse(FORBIDDEN, status_code=403)(scope, receive, send)


class BadRequest(ImgrankError):
    """A request the page would never send: answered 400 (413 for a body over MAX_BODY)."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


class Review:
    """The page's state: a database connection per server thread, the paths behind queue items, a retrain."""

    def __init__(self, db_path: str | None = None):
        self.db_path = db_path
        self._local = threading.local()
        self.paths: dict[str, str] = {}  # sha256 -> a present path, filled as queues are served
        self.retrain: dict = {"running": False}

    def db(self):
        if getattr(self._local, "db", None) is None:
            self._local.db = open_db(self.db_path)
        return self._local.db

    def with_db(self, fn, *args):
        """fn(db, *args) with this thread's connection (for run_in_threadpool)."""
        return fn(self.db(), *args)

    def queue(self, name: str, n: int) -> dict:

        items = queue(self.db(), name, n)
        for item in items:
            self.paths[item["sha256"]] = item.pop("_path")
        return {
            "queue": name,
            "items": items,
            "source": score_source(self.db()),
            "labels": label_counts(self.db()),
        }

    def label(self, sha256: str, label: str | None) -> dict:

        if sha256 not in self.paths:
            raise ImgrankError("unknown photo: reload the queue")
        previous = current_label(self.db(), sha256)
        set_label(self.db(), sha256, label, "reviewed", self.paths[sha256])
        return {"sha256": sha256, "label": label, "previous": previous}

    def trash_count(self) -> dict:
        """How many present photos are labelled delete: what the trash button would move."""

        return {"count": len(chosen(self.db(), labelled="delete"))}

    def trash_deletes(self, confirmed: int) -> dict:
        """Move the photos labelled delete to the Trash, if they are as many as the owner confirmed."""

        paths = trash.chosen(self.db(), labelled="delete")
        if len(paths) != confirmed:
            raise ImgrankError(f"{len(paths)} photos are marked delete now, not {confirmed}: nothing moved")
        result = trash.move(self.db(), paths)
        return {"moved": len(result.moved), "batch": result.batch, "failed": trash.failures(result)}

    def start_retrain(self) -> dict:
        if self.retrain["running"]:
            return self.retrain
        self.retrain = {"running": True}
        threading.Thread(target=self._retrain, daemon=True).start()
        return self.retrain

    def _retrain(self) -> None:

        try:
            run = train(open_db(self.db_path), TrainConfig())
            self.retrain = {"running": False, "note": run["note"]}
        except (ImgrankError, ImportError) as e:
            self.retrain = {"running": False, "error": str(e)}


def _path_of(review: Review, sha256: str) -> str:
    path = review.paths.get(sha256)
    if path is None:
        raise ImgrankError("unknown photo")
    return path


async def _json_body(request: Request, limit: int = MAX_BODY):
    """The request's JSON body, read no further than `limit` bytes; BadRequest for anything else."""
    declared = request.headers.get("content-length", "0")
    if not declared.isdigit() or int(declared) > limit:
        raise BadRequest(f"the request body must be JSON of at most {limit} bytes", 413)
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise BadRequest(f"the request body must be JSON of at most {limit} bytes", 413)
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        raise BadRequest("the request body is not JSON") from None


def _label_request(body) -> tuple[str, str | None]:
    """(sha256, label) from /api/label's body, checked."""
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object")
    sha, label = body.get("sha256"), body.get("label")
    if not isinstance(sha, str) or not SHA256.fullmatch(sha):
        raise BadRequest("sha256 must be 64 lower-case hex digits")
    if label not in ("keep", "delete", None):
        raise BadRequest("label must be keep, delete or null")
    return sha, label


def _count(request: Request, default: int = 60) -> int:
    """The query's `n`: a whole number from 1 to MAX_N."""
    raw = request.query_params.get("n", str(default))
    if not (raw.isascii() and raw.isdigit() and 1 <= int(raw) <= MAX_N):
        raise BadRequest(f"n must be a whole number from 1 to {MAX_N}")
    return int(raw)


def build_app(review: Review, session: Session) -> SessionGate:
    """The Starlette app behind the session gate."""

    files = resources.files("imgrank.review")
    page = (files / "page.html").read_text(encoding="utf-8")

    async def index(request: Request):
        return HTMLResponse(page, headers={"Cache-Control": "no-store"})

    async def static(request: Request):
        name = request.path_params["name"]
        if name not in STATIC:
            return PlainTextResponse("not found", status_code=404)
        return Response((files / name).read_bytes(), media_type=STATIC[name])

    async def queue(request: Request):
        name = request.path_params["name"]
        if name not in queues.QUEUES:
            return JSONResponse({"error": "no such queue"}, status_code=404)
        return JSONResponse(await run_in_threadpool(review.queue, name, _count(request)))

    async def why(request: Request):
        return JSONResponse(await run_in_threadpool(review.with_db, queues.why, request.path_params["sha"]))

    async def label(request: Request):
        sha, value = _label_request(await _json_body(request))
        return JSONResponse(await run_in_threadpool(review.label, sha, value))

    async def retrain(request: Request):
        if request.method == "POST":
            return JSONResponse(review.start_retrain())
        return JSONResponse(review.retrain)

    async def trash(request: Request):
        if request.method == "GET":
            return JSONResponse(await run_in_threadpool(review.trash_count))
        body = await _json_body(request)
        confirmed = body.get("count") if isinstance(body, dict) else None
        if not isinstance(confirmed, int) or isinstance(confirmed, bool):
            raise BadRequest("count must be the number of photos confirmed")
        return JSONResponse(await run_in_threadpool(review.trash_deletes, confirmed))

    async def regroup(request: Request):

        return JSONResponse(await run_in_threadpool(review.with_db, dupes.regroup))

    async def metrics_tab(request: Request):
        data = await run_in_threadpool(review.with_db, metrics.gather)
        return JSONResponse({"html": metrics.render(data)})

    async def thumb(request: Request):
        sha = request.path_params["sha"]
        path = await run_in_threadpool(thumbs.thumbnail, sha, _path_of(review, sha))
        return FileResponse(path, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})

    async def large(request: Request):
        sha = request.path_params["sha"]
        data = await run_in_threadpool(thumbs.large_jpeg, _path_of(review, sha))
        return Response(data, media_type="image/jpeg")

    app = Starlette(
        routes=[
            Route("/", index),
            Route("/static/{name}", static),
            Route("/api/queue/{name}", queue),
            Route("/api/why/{sha}", why),
            Route("/api/label", label, methods=["POST"]),
            Route("/api/retrain", retrain, methods=["GET", "POST"]),
            Route("/api/regroup", regroup, methods=["POST"]),
            Route("/api/trash", trash, methods=["GET", "POST"]),
            Route("/api/metrics", metrics_tab),
            Route("/thumb/{sha}", thumb),
            Route("/large/{sha}", large),
        ],
        exception_handlers={ImgrankError: _error},
    )
    return SessionGate(app, session)


async def _error(request: Request, exc: Exception) -> JSONResponse:
    if isinstance(exc, BadRequest):
        return JSONResponse({"error": str(exc)}, status_code=exc.status)
    return JSONResponse({"error": str(exc)}, status_code=404 if "unknown photo" in str(exc) else 400)


def serve(port: int = 0, on_ready=None, db_path: str | Path | None = None) -> None:
    """Serve the page on 127.0.0.1 until interrupted. `on_ready(url, file)` gets a login address that
    works once and the owner-only redirect file that logs in again (removed when the server stops)."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("127.0.0.1", port))
        sock.listen(128)  # connections wait in the backlog from the moment the address is printed
    except OSError as e:
        raise ImgrankError(f"cannot listen on 127.0.0.1:{port}: {e.strerror}") from None
    port = sock.getsockname()[1]
    session = Session(f"imgrank-{port}")  # cookies do not tell ports apart: one name per server
    base = f"http://127.0.0.1:{port}"
    redirect = open_file(f"{base}/login?key={session.key}", port)
    app = build_app(Review(str(db_path) if db_path else None), session)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    # uvicorn re-raises the signal that stopped it once it is done: end with SystemExit, not killed by
    # SIGTERM, so the redirect file is removed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        if on_ready:
            on_ready(f"{base}/login?code={session.one_time_code()}", redirect)
        server.run(sockets=[sock])
    finally:
        redirect.unlink(missing_ok=True)
