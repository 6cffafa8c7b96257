"""Where log records go: this package's warnings to the console, everything to the run's log file.

Libraries (Orbax, TensorStore, grain, JAX) log a great deal when something fails — hundreds of lines for a
full disk — and the cause drowns. The console shows only this package's warnings and errors; every record
of every logger, at INFO and up, goes to `<dir>/logs/<command>.process_<i>.log` once a command knows where
its output lives (`to_file`), including what was logged before (kept in memory, the newest records first
to be kept).
"""
import collections
import logging
import os
import sys
import threading

from absl import logging as absl_logging

PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
_EARLY_RECORDS = 20_000


class _Memory(logging.Handler):
    """The records logged before a log file was chosen."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.records: collections.deque[logging.LogRecord] = collections.deque(maxlen=_EARLY_RECORDS)

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


class _LogFile(logging.FileHandler):
    def handleError(self, record: logging.LogRecord) -> None:
        """A log file that cannot be written (the disk it is on is full) drops the record: printing the failure
        to the console, as logging does by default, would bury the command's own last message."""


_memory = _Memory()
_file_handler: _LogFile | None = None


_FILE_ONLY = logging.getLogger("headless_jax.file_only")  # records for the log file, never the console


def _ours(record: logging.LogRecord) -> bool:
    """Logged by this package's code (not by a library called from it) and meant for the console."""
    return (record.levelno >= logging.WARNING and record.name != _FILE_ONLY.name
            and os.path.abspath(record.pathname).startswith(PACKAGE_DIR))


def _log_thread_exception(args: threading.ExceptHookArgs) -> None:
    """A background thread's uncaught exception (e.g. an Orbax save failing): the main thread meets the same
    failure and reports it once."""
    _FILE_ONLY.error("uncaught exception in thread %s", getattr(args.thread, "name", "?"),
                     exc_info=(args.exc_type, args.exc_value, args.exc_traceback))


def _log_uncaught(exc_type, exc_value, exc_traceback) -> None:
    """What Python prints for an exception no code catches: here, those raised in library callbacks (TensorStore
    posting to Orbax's closed event loop after a failed save prints one per pending write)."""
    _FILE_ONLY.error("uncaught exception", exc_info=(exc_type, exc_value, exc_traceback))


def _log_unraisable(unraisable) -> None:
    _FILE_ONLY.error("exception ignored in %r: %s", unraisable.object, unraisable.err_msg or "",
                     exc_info=(unraisable.exc_type, unraisable.exc_value, unraisable.exc_traceback))


def capture() -> None:
    """Console: this package's warnings only; all records (INFO and up) kept for the log file, and so are the
    exceptions no code catches (the commands catch their own: see headless_jax/command.py)."""
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    absl_logging.set_verbosity(absl_logging.INFO)
    for handler in root.handlers:
        handler.addFilter(_ours)
    absl_logging.get_absl_handler().addFilter(_ours)
    root.addHandler(_memory)
    threading.excepthook = _log_thread_exception
    sys.excepthook = _log_uncaught
    sys.unraisablehook = _log_unraisable


def log_path() -> str | None:
    return _file_handler.baseFilename if _file_handler else None


def local_directory(directory: str) -> str:
    """Where files that only a local path can hold go for `directory`: itself, or for a remote one (gs://…) its
    mirror under the local temporary directory."""
    if "://" not in directory:
        return directory
    return os.path.join(os.environ.get("TMPDIR", "/tmp"), "headless_jax", directory.split("://", 1)[1])


def to_file(directory: str, command: str, process_index: int = 0) -> str:
    """Streams every record to `<directory>/logs/<command>.process_<i>.log` (appended; the records kept so far
    first). A remote `directory` (gs://…) logs to the local temporary directory instead. Returns the path."""
    global _file_handler
    if _file_handler is not None:
        return _file_handler.baseFilename
    directory = local_directory(directory)
    os.makedirs(os.path.join(directory, "logs"), exist_ok=True)
    _file_handler = _LogFile(os.path.join(directory, "logs", f"{command}.process_{process_index}.log"))
    _file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(filename)s:%(lineno)d] "
                                                 "%(message)s"))
    for record in _memory.records:
        _file_handler.handle(record)
    root = logging.getLogger()
    root.removeHandler(_memory)
    _memory.records.clear()
    root.addHandler(_file_handler)
    return _file_handler.baseFilename


def to_file_only(message: str, error: BaseException) -> None:
    """`message` and the traceback of `error`, in the log file only (the console gets the short message)."""
    if _file_handler is not None:
        _file_handler.handle(logging.LogRecord("headless_jax", logging.ERROR, __file__, 0, message, None,
                                               (type(error), error, error.__traceback__)))


def silence_console() -> None:
    """From here on, whatever is written to stdout or stderr (interpreter shutdown: threads still failing, module
    teardown) goes to the log file, or nowhere if there is none, so that the last message printed stays last."""
    sys.stdout.flush()
    sys.stderr.flush()
    target = os.open(log_path() or os.devnull, os.O_WRONLY | os.O_APPEND)
    os.dup2(target, 1)
    os.dup2(target, 2)
    os.close(target)
