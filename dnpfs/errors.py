"""The one exception family of dnpfs.  fs.py maps each to an errno, and only there."""


class DnpfsError(Exception):
    """Base of every error dnpfs raises on purpose."""


class InvalidName(DnpfsError):
    """A pipe or group name a Kafka topic could not carry."""


class PipeExists(DnpfsError):
    pass


class NoSuchPipe(DnpfsError):
    """No pipe (or reader group) of that name.  What a store raises for any
    operation on a pipe it does not have; ENOENT."""


class Busy(DnpfsError):
    """In use: a reader group with readers open cannot be deleted."""


class PipeGone(DnpfsError):
    """The pipe was deleted while a writer still had it open (EPIPE).  Raised
    by the pipe layer, never by a store: a store says NoSuchPipe."""


class StoreError(DnpfsError):
    """The backend could not store or fetch records (disk, broker, timeout)."""


class Unreadable(StoreError):
    """The store holds records here that cannot be read (a corrupt batch)."""


class Interrupted(DnpfsError):
    """The process waiting in a syscall has a signal pending."""


class WouldBlock(DnpfsError):
    """O_NONBLOCK and nothing to deliver yet."""


class ShuttingDown(DnpfsError):
    """The daemon is stopping; no new work is accepted."""
