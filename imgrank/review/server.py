"""The review page's server: Starlette on uvicorn, bound to 127.0.0.1, nothing served without the token.

Every decision goes through labels.set_label with source `reviewed`, the same history `relabel`
writes. The page never deletes, moves or rewrites a photo: "delete" is a label.
"""

from __future__ import annotations

import hmac
import secrets
import socket
import threading
from importlib import resources
from pathlib import Path
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from imgrank.errors import ImgrankError

FORBIDDEN = "forbidden: open the address with the token that `imgrank review` printed"


class TokenGate:
    """ASGI wrapper: a request without the right token (query `token` or header X-Imgrank-Token), or
    for another host than the loopback one we are bound to, gets 403 and nothing else."""

    def __init__(self, app, token: str):
        self.app, self.token = app, token

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
            headers = dict(scope.get("headers") or [])
            given = query.get("token", [""])[0] or headers.get(b"x-imgrank-token", b"").decode("latin-1")
            host = headers.get(b"host", b"").decode("latin-1").rsplit(":", 1)[0]
            if not hmac.compare_digest(given.encode(), self.token.encode()) or host not in (
                "127.0.0.1",
                "localhost",
            ):
                await PlainTextResponse(FORBIDDEN, status_code=403)(scope, receive, send)
                return
        await self.app(scope, receive, send)


class Review:
    """The page's state: a database connection per server thread, the paths behind queue items, a retrain."""

    def __init__(self, db_path: str | None = None):
        self.db_path = db_path
        self._local = threading.local()
        self.paths: dict[str, str] = {}  # sha256 -> a present path, filled as queues are served
        self.retrain: dict = {"running": False}

    def db(self):
        if getattr(self._local, "db", None) is None:
            from imgrank.db import open_db

            self._local.db = open_db(self.db_path)
        return self._local.db

    def with_db(self, fn, *args):
        """fn(db, *args) with this thread's connection (for run_in_threadpool)."""
        return fn(self.db(), *args)

    def queue(self, name: str, n: int) -> dict:
        from imgrank.labels import label_counts
        from imgrank.review.queues import queue
        from imgrank.runs import score_source

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
        from imgrank.labels import current_label, set_label

        if sha256 not in self.paths:
            raise ImgrankError("unknown photo: reload the queue")
        previous = current_label(self.db(), sha256)
        set_label(self.db(), sha256, label, "reviewed", self.paths[sha256])
        return {"sha256": sha256, "label": label, "previous": previous}

    def trash_count(self) -> dict:
        """How many present photos are labelled delete: what the trash button would move."""
        from imgrank.trash import chosen

        return {"count": len(chosen(self.db(), labelled="delete"))}

    def trash_deletes(self, confirmed: int) -> dict:
        """Move the photos labelled delete to the Trash, if they are as many as the owner confirmed."""
        from imgrank import trash

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
        from imgrank.db import open_db

        try:
            from imgrank.train import TrainConfig, train

            run = train(open_db(self.db_path), TrainConfig())
            self.retrain = {"running": False, "note": run["note"]}
        except (ImgrankError, ImportError) as e:
            self.retrain = {"running": False, "error": str(e)}


def _path_of(review: Review, sha256: str) -> str:
    path = review.paths.get(sha256)
    if path is None:
        raise ImgrankError("unknown photo")
    return path


def build_app(review: Review, token: str) -> TokenGate:
    """The Starlette app behind the token gate."""
    from imgrank.review import metrics, queues, thumbs

    page = (resources.files("imgrank.review") / "page.html").read_text(encoding="utf-8")

    async def index(request: Request):
        return HTMLResponse(page.replace("__TOKEN__", token))

    async def queue(request: Request):
        name = request.path_params["name"]
        if name not in queues.QUEUES:
            return JSONResponse({"error": f"no queue {name}"}, status_code=404)
        n = min(500, int(request.query_params.get("n", "60")))
        return JSONResponse(await run_in_threadpool(review.queue, name, n))

    async def why(request: Request):
        return JSONResponse(await run_in_threadpool(review.with_db, queues.why, request.path_params["sha"]))

    async def label(request: Request):
        body = await request.json()
        if body.get("label") not in ("keep", "delete", None):
            return JSONResponse({"error": "label must be keep, delete or null"}, status_code=400)
        return JSONResponse(await run_in_threadpool(review.label, str(body.get("sha256")), body.get("label")))

    async def retrain(request: Request):
        if request.method == "POST":
            return JSONResponse(review.start_retrain())
        return JSONResponse(review.retrain)

    async def trash(request: Request):
        if request.method == "GET":
            return JSONResponse(await run_in_threadpool(review.trash_count))
        confirmed = (await request.json()).get("count")
        if not isinstance(confirmed, int) or isinstance(confirmed, bool):
            return JSONResponse({"error": "count must be the number of photos confirmed"}, status_code=400)
        return JSONResponse(await run_in_threadpool(review.trash_deletes, confirmed))

    async def regroup(request: Request):
        from imgrank import dupes

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
    return TokenGate(app, token)


async def _error(request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"error": str(exc)}, status_code=404 if "unknown photo" in str(exc) else 400)


def serve(port: int = 0, on_ready=None, db_path: str | Path | None = None) -> None:
    """Serve the page on 127.0.0.1 until interrupted; `on_ready(url)` gets the address with its token."""
    import uvicorn

    token = secrets.token_urlsafe(24)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("127.0.0.1", port))
        sock.listen(128)  # connections wait in the backlog from the moment the address is printed
    except OSError as e:
        raise ImgrankError(f"cannot listen on 127.0.0.1:{port}: {e.strerror}") from None
    url = f"http://127.0.0.1:{sock.getsockname()[1]}/?token={token}"
    app = build_app(Review(str(db_path) if db_path else None), token)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    if on_ready:
        on_ready(url)
    server.run(sockets=[sock])
