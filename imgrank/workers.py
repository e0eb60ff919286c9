"""Decoding workers: read, hash and decode files in other processes, in bounded memory.

- Few files are in flight at once (a few per worker), so neither the walk nor the decoded results
  run ahead of the embedding: the main process holds what one batch needs, whatever the folder.
- Each worker may map only so much more than it had at start (RLIMIT_AS): a decode past that fails
  in the worker with MemoryError, and the file is recorded as unreadable. This holds for one job and
  for one file too (`scan --jobs 1`, `relabel`, the daemon): they get one worker.
- Workers are forked from multiprocessing's fork server with this module already imported there,
  so starting one costs milliseconds, not an interpreter start and imports (~0.3 s, 1.5 s loaded).
- The fork server starts with no working directory on its import path (PYTHONSAFEPATH): a folder
  named `imgrank` where the command runs (a clone in ~, the command run from ~) is not imported.
- A worker that dies (the OOM killer, a crash inside a decoder) or hangs breaks the pool. The files
  then in flight are retried one at a time, each in a fresh worker; a file that kills (or hangs)
  its worker again is recorded as unreadable with that reason, marked `ours` (not the file's own
  fault: the next scan tries it again), and the scan goes on.
- Workers that cannot even start (an import failure, a broken install) are imgrank's failure, never
  a photo's: WorkerError stops the scan before anything is recorded.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures.process import BrokenProcessPool

from imgrank import config
from imgrank.embed import preprocess_image
from imgrank.errors import UnreadableImage, WorkerError
from imgrank.files import decode_image, read_file, sha256_bytes
from imgrank.parentdeath import die_with_parent
from imgrank.prior import measure_cues
from imgrank.thumbs import save_from_decode

# Address space a decoding worker may add to what it maps at start: a 1 GB decode (the most
# imgrank.files lets through) and the copies made around it fit, a runaway decoder does not.
WORKER_MEMORY = 3 << 30
# Files in flight per worker: enough to keep every worker busy, few enough to bound memory.
IN_FLIGHT_PER_WORKER = 4
# A file still not decoded after this long has hung its worker (a 100-megapixel TIFF takes ~5 s).
FILE_TIMEOUT = 300.0

_known: set[str] = set()


def init_worker(known: set[str], limit_memory: bool = False, home: str | None = None) -> None:
    """Set up a decoding process: content already embedded (not decoded again), memory limit, and
    the caller's imgrank home (thumbnails go there; the fork server's environment may be older)."""
    global _known
    _known = known
    if home is not None:
        os.environ["IMGRANK_HOME"] = home
    if limit_memory:
        die_with_parent()  # the fork server, its parent, dies with the command (parentdeath.py)
        # Ctrl-C reaches the whole process group: the parent decides how to stop, not each worker.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        _limit_memory(WORKER_MEMORY)


def _limit_memory(extra: int) -> None:
    import resource

    try:
        with open("/proc/self/statm") as f:
            mapped = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:  # not Linux: no reliable baseline, no limit
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = mapped + extra
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    if soft == resource.RLIM_INFINITY or soft > limit:
        resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


def read_one(path: str) -> dict:
    """Read a file once: hash it, and decode+preprocess it unless its content is already embedded.

    `path` is the name as os.fsdecode gives it (bytes that are not UTF-8 included).
    """
    out = {"path": path, "sha256": None, "array": None, "size": None, "mtime_ns": None}
    try:
        data, st = read_file(path)
        out.update(size=st.st_size, mtime_ns=st.st_mtime_ns, sha256=sha256_bytes(data))
        if out["sha256"] not in _known:
            img = decode_image(data, path)
            del data  # the bytes are not needed while preprocessing
            out["width"], out["height"] = img.info["original_size"]
            out["array"] = preprocess_image(img)
            out["cues"] = measure_cues(img)  # the prior's cues and the review thumbnail, from this decode
            save_from_decode(img, out["sha256"], st.st_size)
    except UnreadableImage as e:
        out["reason"] = str(e)
    except MemoryError:  # past the worker's memory limit outside the decoder itself
        out["reason"] = "out of memory while decoding"
    except Exception as e:  # a bug of imgrank's on this file: recorded as ours, tried again next scan
        out.update(reason=f"imgrank failed on this file ({type(e).__name__}: {e})", ours=True)
    return out


def ready() -> bool:
    """A task that needs nothing but a working worker: run first, so that a worker that cannot
    start (or import imgrank) is never taken for a photo that kills it."""
    return True


def _failed(path: str, reason: str) -> dict:
    """A file whose worker died or hung, with its size and time: recorded unreadable and `ours` (the
    process died, which may be the machine's doing), so the next scan tries it once more."""
    try:
        st = os.stat(path)
        size, mtime_ns = st.st_size, st.st_mtime_ns
    except OSError:
        size = mtime_ns = None
    return {
        "path": path, "sha256": None, "array": None, "size": size, "mtime_ns": mtime_ns,
        "reason": reason, "ours": True,
    }  # fmt: skip


def _start_fork_server() -> None:
    """Start multiprocessing's fork server without the working directory on its sys.path. It is
    started with `python -c`, which puts '' first, and Python 3.11 ignores the parent's sys.path
    there: a folder named `imgrank` in the working directory would be imported instead of imgrank."""
    from multiprocessing import forkserver

    saved = os.environ.get("PYTHONSAFEPATH")
    os.environ["PYTHONSAFEPATH"] = "1"
    try:
        forkserver.ensure_running()
    finally:
        if saved is None:
            del os.environ["PYTHONSAFEPATH"]
        else:
            os.environ["PYTHONSAFEPATH"] = saved


def _check(pool: ProcessPoolExecutor) -> None:
    """Raise WorkerError unless the pool's workers start and answer (see `ready`)."""
    try:
        pool.submit(ready).result(timeout=FILE_TIMEOUT)
    except Exception as e:  # BrokenProcessPool, a timeout, an error in the worker: all ours
        raise WorkerError(
            "imgrank's decoding processes do not start (their error is above): nothing was recorded. "
            "This is imgrank's failure, not your photos': check the install (`pip install -e .` in the "
            f"clone) and scan again [{type(e).__name__}]"
        ) from None


class _Workers:
    """A process pool that survives its workers: see the module docstring."""

    def __init__(self, jobs: int, known: set[str], slack: int = 0):
        self.jobs = jobs
        self.known = known
        self.depth = jobs * IN_FLIGHT_PER_WORKER + slack

    def _start(self, workers: int) -> ProcessPoolExecutor:
        if os.name == "posix":
            ctx = multiprocessing.get_context("forkserver")
            # Takes effect when the fork server starts: it has this module imported, and dies with
            # the process that started it (imgrank.parentdeath).
            ctx.set_forkserver_preload(["imgrank.forkserver_init", __name__])
            _start_fork_server()
        else:
            ctx = multiprocessing.get_context("spawn")
        home = str(config.home_dir())
        return ProcessPoolExecutor(
            workers, mp_context=ctx, initializer=init_worker, initargs=(self.known, True, home)
        )

    @staticmethod
    def _stop(pool: ProcessPoolExecutor, kill: bool = False) -> None:
        """Shut the pool down; with `kill`, its workers first (a hung worker never finishes its
        task, and concurrent.futures has no public way). Healthy workers are never killed: they
        finish the file in hand (killing them while the pool runs can hang its shutdown)."""
        if kill:
            for process in list((getattr(pool, "_processes", None) or {}).values()):
                if process.is_alive():
                    process.kill()
        pool.shutdown(wait=True, cancel_futures=True)

    def run(self, paths: Iterable[str]) -> Iterator[dict]:
        pending = iter(paths)
        inflight: deque[tuple[str, Future]] = deque()
        pool = self._start(self.jobs)
        try:
            _check(pool)
            while True:
                while len(inflight) < self.depth:
                    path = next(pending, None)
                    if path is None:
                        break
                    inflight.append((path, pool.submit(read_one, path)))
                if not inflight:
                    return
                path, future = inflight[0]
                try:
                    result = future.result(timeout=FILE_TIMEOUT)
                except (BrokenProcessPool, FutureTimeout):
                    self._stop(pool, kill=True)
                    yield from self._recover(inflight)
                    inflight.clear()
                    pool = self._start(self.jobs)
                    continue
                inflight.popleft()
                yield result
        finally:
            self._stop(pool)

    def _recover(self, inflight: deque[tuple[str, Future]]) -> Iterator[dict]:
        """After a worker died or hung: keep what finished, retry the rest one at a time."""
        for path, future in inflight:
            if future.done() and not future.cancelled() and future.exception() is None:
                yield future.result()
            else:
                yield self._alone(path)

    def _probe(self) -> None:
        pool = self._start(1)
        failed = True
        try:
            _check(pool)
            failed = False
        finally:
            self._stop(pool, kill=failed)

    def _alone(self, path: str) -> dict:
        pool = self._start(1)
        hung = False
        try:
            return pool.submit(read_one, path).result(timeout=FILE_TIMEOUT)
        except BrokenProcessPool:
            self._probe()  # a worker that cannot start at all is not this file's doing
            return _failed(path, "the decoding process died on this file (killed: out of memory?)")
        except FutureTimeout:
            hung = True
            return _failed(path, f"decoding took longer than {FILE_TIMEOUT:.0f} s")
        finally:
            self._stop(pool, kill=hung)


def read_all(paths: Iterable[str], known: set[str], jobs: int, slack: int = 0) -> Iterator[dict]:
    """read_one over `paths` in `jobs` worker processes, in order, a bounded number in flight:
    IN_FLIGHT_PER_WORKER per worker, plus `slack` for a consumer that stops to work on a batch of
    results (the scan's embedding), so that the workers go on decoding meanwhile."""
    yield from _Workers(jobs, known, slack).run(paths)
