"""Running a script's main: exit codes, one error line per failure, SIGINT/SIGTERM, a bounded shutdown; and
the one-line logs and warnings the verbs write to stderr (each line redacted and escaped). Light to import:
every script imports it while parsing its flags."""

from __future__ import annotations

import contextlib
import errno
import os
import resource
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable
from types import FrameType
from typing import NoReturn

from shared.base.errors import BadInput, FolderLocked, Incomplete, describe, is_bug
from shared.base.text import printable, redact
from shared.cli.resources import address_space_limit, fit_to_limits

EXIT_FAILED = 1  # an export or query ran but did not complete (also: a bug)
EXIT_USAGE = 2  # bad arguments, bad input, missing credentials
EXIT_LOCKED = 3  # the output folder is in use by another export
INTERRUPT_GRACE_S = 10.0  # how long unwinding after SIGINT/SIGTERM may take before the process just exits
EXIT_GRACE_S = 20.0  # how long the clients' own shutdown may take once the work is done
TRACEBACK_VARIABLE = "RUN_TOOLS_TRACEBACK"  # 1: an unexpected error's traceback, the libraries' warnings
# The main thread has run the SIGINT/SIGTERM handler, or main has ended: a signal then raises nothing, so
# a storm of them neither interrupts the unwinding of the first (its clean-up, its error line) nor escapes
# run_main as a traceback.
_handled = threading.Event()


# Set once the main thread has written the closing error line: threads still winding down (a retry of
# an abandoned download) then write nothing after it.
closed = threading.Event()


def log(message: str) -> None:
    """A progress or status line on stderr (stdout is for data); always one line."""
    if closed.is_set() and threading.current_thread() is not threading.main_thread():
        return
    print(printable(redact(message)), file=sys.stderr, flush=True)


def warn(message: str) -> None:
    """A warning line on stderr."""
    log(f"warning: {message}")


def is_interactive() -> bool:
    """True when stderr is a terminal a person watches (not cron, not CI, not a pipe)."""
    return sys.stderr.isatty() and not os.environ.get("CI")


class Terminated(KeyboardInterrupt):
    """SIGTERM (cron, systemd, `timeout`), raised in the main thread: it unwinds like Ctrl-C, so temp files
    are removed and the folder lock keeps its resume record."""


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    """Print one error line on stderr and exit with `code`."""
    log("error: " + " ".join(message.split()))  # library messages may span lines or end in one
    closed.set()
    sys.exit(code)


def run_main(main: Callable[[], int | None]) -> NoReturn:
    """Run a script's main, turning known errors into one line and an exit code.

    SIGTERM is an interruption like Ctrl-C while `main` runs (exit 143 rather than 130). A script run as a
    program (`main` defined in `__main__`, not a test calling it) also exits within EXIT_GRACE_S of its
    work ending, whatever the clients' shutdown does.
    """
    on_main_thread = threading.current_thread() is threading.main_thread()  # where signals are handled
    closed.clear()
    _handled.clear()
    if main.__module__ == "__main__" and on_main_thread:
        _watch_for_aborts()  # first: it forks, which only a process without threads may
        _watch_signals()
        _quiet_library_warnings()
    previous = signal.signal(signal.SIGTERM, _raise_terminated) if on_main_thread else None
    # While asyncio runs (the wandb client's waits), Python's own SIGINT handler is swapped for one that
    # only cancels the awaited task: Ctrl-C waited for a stalled request. This one raises at once. An
    # ignored SIGINT (a job started with `&` by a shell) stays ignored.
    own_int = on_main_thread and signal.getsignal(signal.SIGINT) is signal.default_int_handler
    if own_int:
        signal.signal(signal.SIGINT, _raise_interrupted)
    try:
        _report_errors(main)
    except SystemExit as leaving:
        if main.__module__ == "__main__":
            _remove_client_temp_folders()
            _exit_within(EXIT_GRACE_S, _exit_status(leaving.code))
        raise
    finally:
        if on_main_thread:  # the clients' exit hooks and the worker threads' joins run next
            signal.signal(signal.SIGTERM, previous)
            # A SIGINT then ends a program without a word (Python's own handler printed a KeyboardInterrupt
            # traceback after the error line); a caller (a test) gets its handler back.
            if own_int:
                program = main.__module__ == "__main__"
                signal.signal(signal.SIGINT, signal.SIG_DFL if program else signal.default_int_handler)


_PR_SET_PDEATHSIG = 1  # prctl(2): the signal a process gets when its parent ends


def _watch_for_aborts() -> None:
    """Under an address-space limit (`ulimit -v`), do the work in a forked child and wait for it here.

    An allocation that fails in Rust or C++ code (polars, pyarrow) aborts its process before Python can
    say a word: exit 134 and no error line, which sizing the allocators (shared.cli.resources) makes rare
    but cannot rule out when the memory is really too little. This process then says it in one line and
    exits 1; any other end of the child is passed on as it is. A signal sent to this process only (as
    `timeout` sends it) goes on to the child. Without a limit nothing forks.
    """
    limit = address_space_limit()
    if limit is None:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        child = os.fork()
    except OSError:  # no memory left to fork: the work runs unwatched
        return
    if child == 0:  # the child: ended as by `kill` should the parent be killed (SIGKILL cannot be passed on)
        import ctypes

        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        return

    def forward(signum: int, frame: FrameType | None) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signum)

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(signum) is not signal.SIG_IGN:
            signal.signal(signum, forward)
    _, status = os.waitpid(child, 0)  # a signal's handler runs, then the wait goes on (PEP 475)
    if os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGABRT:
        log(
            f"error: out of memory: the address space is limited to {limit // 2**20} MiB (ulimit -v);"
            " an allocation failed in a library, which aborted the process"
        )
        os._exit(EXIT_FAILED)
    if os.WIFSIGNALED(status):  # ended by a signal: so is this process
        signal.signal(os.WTERMSIG(status), signal.SIG_DFL)
        os.kill(os.getpid(), os.WTERMSIG(status))
    os._exit(os.waitstatus_to_exitcode(status))  # no exit hooks: the child ran them


def _quiet_library_warnings() -> None:
    """Keep the libraries' Python warnings off stderr (polars' "POLARS_MAX_BLOCKING_THREAD_COUNT reached
    …, this may indicate a deadlock" after reading 1,000 export folders): nothing a user can act on, and
    the tools' own warnings are lines of their own. RUN_TOOLS_TRACEBACK=1 shows them. The hook, not a
    filter: a library's own filters would go before one."""
    if os.environ.get(TRACEBACK_VARIABLE) != "1":
        warnings.showwarning = lambda *args, **kwargs: None


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    if not _handled.is_set():
        _handled.set()
        raise Terminated


def _raise_interrupted(signum: int, frame: FrameType | None) -> None:
    if not _handled.is_set():
        _handled.set()
        raise KeyboardInterrupt


def _watch_signals() -> None:
    """Make SIGINT and SIGTERM act at once in a script run as a program.

    The kernel hands a signal to any thread, and Python runs its handler in the main thread only when
    that thread runs bytecode: a main thread waiting on a lock (the wandb client waiting for a stalled
    answer) went on waiting, 40-60 s. Python also writes each signal's number to a wakeup fd, from
    whichever thread got it: a watcher reads it and sends the signal on to the main thread, whose wait
    that interrupts. Should unwinding then take longer than INTERRUPT_GRACE_S, the process exits with the
    signal's status; a temp file left then is removed by the next export into the folder.
    """
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
    main_thread = threading.main_thread().ident
    assert main_thread is not None
    stopping: list[int] = []

    def watch() -> None:
        while True:
            for signum in os.read(read_end, 64):
                if signum not in (signal.SIGINT, signal.SIGTERM):
                    continue
                if not stopping:
                    stopping.append(signum)
                    threading.Timer(INTERRUPT_GRACE_S, _leave_now, (signum,)).start()
                time.sleep(0.1)  # the main thread may be running the handler already
                if not _handled.is_set():
                    # A library's own handler (polars') may restart system calls: then the main thread's
                    # wait resumes instead of returning to Python. Interrupting ones, as Python sets.
                    signal.siginterrupt(signum, True)
                    signal.pthread_kill(main_thread, signum)

    try:
        threading.Thread(target=watch, name="signal-watch", daemon=True).start()
    except RuntimeError:  # no thread left to start (out of memory): Python's own handling remains
        signal.set_wakeup_fd(-1)


def _leave_now(signum: int) -> None:
    if not closed.is_set():
        print(f"error: interrupted ({signal.Signals(signum).name})", file=sys.stderr, flush=True)
    os._exit(128 + signum)


def _ended(main: Callable[[], int | None]) -> int | None:
    """`main`'s result; once it has ended, by a return or an error, a signal raises nothing (the error
    line and the exit go on)."""
    try:
        return main()
    finally:
        _handled.set()


def _report_errors(main: Callable[[], int | None]) -> NoReturn:
    try:
        fit_to_limits()
        code = _ended(main)
    except BadInput as error:
        fail(str(error), EXIT_USAGE)
    except Incomplete as error:
        fail(str(error), EXIT_FAILED)
    except FolderLocked as error:
        fail(str(error), EXIT_LOCKED)
    except Terminated:
        fail("interrupted (SIGTERM)", 128 + signal.SIGTERM)
    except KeyboardInterrupt:
        fail("interrupted (SIGINT)", 128 + signal.SIGINT)
    except BrokenPipeError:
        # The reader of stdout went away (e.g. `| head`): not an error of ours.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = 0
    except OSError as error:  # a file or network error no code path expected: still one line
        where = f"{error.filename}: " if error.filename else ""
        fail(out_of_resources(error) or f"{where}{error.strerror or error}", EXIT_FAILED)
    except Exception as error:  # a bug of ours, or an error of a library that no code path expected
        fail(out_of_resources(error) or unexpected(error), EXIT_FAILED)
    except BaseException as error:  # a Rust library's panic: pyo3's PanicException is no Exception
        if type(error).__name__ != "PanicException":
            raise
        fail(out_of_resources(error) or unexpected(error), EXIT_FAILED)
    sys.exit(code or 0)


def unexpected(error: BaseException) -> str:
    """The one line of an error no code path expected, saying it is a bug; with RUN_TOOLS_TRACEBACK=1 the
    traceback goes to stderr first."""
    if os.environ.get(TRACEBACK_VARIABLE) == "1":
        import traceback

        traceback.print_exception(error, file=sys.stderr)
    kind = "a bug in run-tools" if is_bug(error) else "an error run-tools did not expect"
    return (
        f"{type(error).__name__}: {describe(error)} ({kind}; please report it;"
        f" {TRACEBACK_VARIABLE}=1 shows where it happened)"
    )


def out_of_resources(error: BaseException) -> str | None:
    """The one line of an error that says the process ran out of memory (a MemoryError, a thread or a
    library that could not be mapped) or of file descriptors, with the limit that caused it; None for
    any other error."""
    text = describe(error)
    if (isinstance(error, OSError) and error.errno == errno.EMFILE) or "TooManyOpenFiles" in text:
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        return f"too many open files: the limit is {soft} (ulimit -n) ({type(error).__name__}: {text})"
    if not (
        isinstance(error, MemoryError)
        or (isinstance(error, RuntimeError) and text == "can't start new thread")
        or (isinstance(error, ImportError) and "failed to map segment" in text)
    ):
        return None
    limit = address_space_limit()
    cause = f"the address space is limited to {limit // 2**20} MiB (ulimit -v)" if limit else "no memory left"
    return f"out of memory: {cause} ({type(error).__name__}: {text})"


# The wandb client's temp folders, made when it loads (module, attribute path of a TemporaryDirectory).
_CLIENT_TEMP_FOLDERS = (
    ("wandb.sdk.data_types._private", "MEDIA_TMP"),
    ("wandb.sdk.artifacts.artifact", "Artifact._TMP_DIR"),
)


def _remove_client_temp_folders() -> None:
    """Remove the wandb client's temp folders now, quietly. Its exit hooks remove them too, but with no
    file descriptor left (ulimit -n) each printed a traceback after the error line and left its folder in
    $TMPDIR; removing an empty folder takes none."""
    for module_name, path in _CLIENT_TEMP_FOLDERS:
        folder = sys.modules.get(module_name)
        for name in path.split("."):
            folder = getattr(folder, name, None)
        if folder is None:
            continue
        try:
            folder.cleanup()
        except OSError:
            with contextlib.suppress(OSError):
                os.rmdir(folder.name)
        folder._finalizer.detach()  # the hooks then find it gone, or leave it without a traceback


def _exit_status(code: object) -> int:
    """The status Python gives `sys.exit(code)`: None is 0, a message is 1."""
    return code if isinstance(code, int) else 0 if code is None else EXIT_FAILED


def _exit_within(grace_s: float, status: int) -> None:
    """Exit with `status` after `grace_s` if the interpreter's shutdown has not finished by then.

    wandb's exit hook waits for its wandb-core process with no time limit; in CI that wait once
    outlasted 300 s after the script had printed its error (wandb-core goes on retrying an
    unreachable server for over 5 minutes). Every output is complete and closed before this is armed.
    """

    def leave_now() -> None:
        log(
            f"warning: the W&B/Neptune client did not shut down within {grace_s:.0f} s; exiting without waiting"
        )
        sys.stdout.flush()
        os._exit(status)

    timer = threading.Timer(grace_s, leave_now)
    timer.daemon = True  # never itself a reason to wait
    with contextlib.suppress(RuntimeError):  # no thread left to start (out of memory): exit unguarded
        timer.start()
