"""Errors a user can cause. The CLI turns each into one clear line and a non-zero exit."""


class ImgrankError(Exception):
    """Base class: something the user can fix (bad input, missing model, too few labels...)."""


class ModelError(ImgrankError):
    """The embedding model or a head cannot be loaded, or does not match the store."""


class UnreadableImage(ImgrankError):
    """A file that cannot be read as an image; the message is the one-line reason."""


class StoreError(ImgrankError):
    """The database or the imgrank home cannot be used (damaged, empty, newer, not writable)."""


class NothingYet(ModelError):
    """Nothing to work on yet (nothing embedded, no held-out predictions): not a failure. The CLI
    says so on stderr and exits 0 (docs/exit-codes.md)."""


class WorkerError(ImgrankError):
    """imgrank's own decoding processes cannot run: the scan stops, and no photo is blamed."""


class Unfinished(ImgrankError):
    """An order or restore stopped by an error part-way: `result` holds what it did until then."""

    def __init__(self, message: str, result):
        super().__init__(message)
        self.result = result


def disk_full(error: BaseException) -> bool:
    """Is this error a full disk (an OSError, SQLite's, or a library's that wraps the OS's)?"""
    import errno

    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(error)
    return "database or disk is full" in text or "No space left on device" in text or "StorageFull" in text


def describe(error: BaseException) -> str:
    """One line for an unexpected OS or SQLite error; a full disk says so."""
    if disk_full(error):
        where = getattr(error, "filename", None)
        return (
            "no space left on the disk"
            + (f" ({where})" if where else "")
            + ": free some space and run it again"
        )
    return getattr(error, "strerror", None) or str(error)
