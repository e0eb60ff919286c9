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
