"""How every command ends: its result, or one short last message that names the cause and the fix.

The exit code tells a launch script what to do:

    0   done (or already done)
    1   failed while working (a non-finite loss, an I/O error, a bug); the last complete checkpoint is intact
    2   refused before any work (a bad config, a locked or unusable workdir, a run that cannot serve the job);
        nothing in the workdir changed
    75  preempted (SIGTERM): a checkpoint was saved; run the same command again to resume (EX_TEMPFAIL of
        sysexits.h; launch/slurm.sbatch requeues on it)

Library log noise is kept off the console and in the log file (headless_jax/logs.py).
"""
import functools
import os
import re
import sys
import traceback
from collections.abc import Callable

from absl import app, flags

from headless_jax import logs
from headless_jax.data.errors import DataError
from headless_jax.experiment import PretrainedError
from headless_jax.interop.errors import InteropError
from headless_jax.loop import NonFiniteError, Preempted
from headless_jax.train.init_from import InitFromError
from headless_jax.train.layout import MeshError
from headless_jax.train.workdir_lock import WorkdirError
from headless_jax.validate import ConfigError

EXIT_FAILED, EXIT_REFUSED, EXIT_PREEMPTED = 1, 2, 75
REFUSALS = (ConfigError, PretrainedError, InitFromError, MeshError, WorkdirError, DataError, InteropError,
            app.UsageError)


def run(main: Callable[[list[str]], None], name: str, output_flag: str) -> None:
    """`absl.app.run(main)` with this module's ending; `output_flag` names the flag of the command's output
    directory, where the log file goes if the command did not open it itself."""
    app.run(functools.partial(_guarded, main, name, output_flag))


def no_arguments(argv: list[str]) -> None:
    """A command that takes flags only refuses positional arguments (a mistyped flag is one)."""
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")


def _guarded(main: Callable[[list[str]], None], name: str, output_flag: str, argv: list[str]) -> None:
    logs.capture()
    try:
        main(argv)
    except Preempted as preempted:
        _finish(EXIT_PREEMPTED, f"Preempted: {preempted}", name, output_flag)
    except REFUSALS as refusal:
        _finish(EXIT_REFUSED, f"Refused: {refusal}", name, output_flag)
    except NonFiniteError as error:
        _finish(EXIT_FAILED, f"Stopped: {error}", name, output_flag)
    except Exception as error:  # noqa: BLE001 — every failure ends with one message
        io_error = system_error_in(error)
        if io_error is not None:
            _finish(EXIT_FAILED, f"Failed: {io_error}. Fix that (free space, permissions) and run the same command "
                    "again: it resumes from the last complete checkpoint, which this failure did not touch", name,
                    output_flag, error)
        else:
            traceback.print_exception(error)
            _finish(EXIT_FAILED, f"Failed: {type(error).__name__}: {error} (traceback above)", name, output_flag,
                    error)


_TENSORSTORE_OS_ERROR = re.compile(r"\[os_error_code='(\d+)'\]")
_TENSORSTORE_PATH = re.compile(r'(?:writing|reading|file): "([^"]+)"')


def system_error_in(error: BaseException) -> str | None:
    """'<what the OS said> (<file>)' if an operating-system error caused `error`, else None. Libraries wrap them:
    an asynchronous save's full disk surfaces as TensorStore's ValueError carrying `[os_error_code='28']`."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno is not None:
            return f"{error.strerror or error}" + (f" ({error.filename})" if error.filename else "")
        code = _TENSORSTORE_OS_ERROR.search(str(error))
        if code:
            paths = _TENSORSTORE_PATH.findall(str(error))
            return os.strerror(int(code.group(1))) + (f" ({paths[-1]})" if paths else "")
        error = error.__cause__ or error.__context__
    return None


def _finish(code: int, message: str, name: str, output_flag: str, error: BaseException | None = None) -> None:
    output = getattr(flags.FLAGS, output_flag, None)
    if code != EXIT_REFUSED and output and logs.log_path() is None:
        try:
            logs.to_file(output, name)
        except OSError:
            pass  # the output directory itself is what failed; the message says so
    if error is not None:
        logs.to_file_only(message, error)
    where = f" [full log: {logs.log_path()}]" if logs.log_path() and code != EXIT_PREEMPTED else ""
    print(message + where, file=sys.stderr, flush=True)
    logs.silence_console()
    sys.exit(code)
