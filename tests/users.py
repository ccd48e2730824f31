"""Children started as a user's would be: as another user, for what root's privileges would hide
(root reads and writes any file, whatever its mode), or with Ctrl-C as a terminal leaves it."""

import os
import signal
import traceback


def ctrl_c_at_its_default() -> None:
    """Start a child with Ctrl-C at its default, as a terminal starts one (``preexec_fn``): a test runner
    launched in the background by a shell without job control inherits SIGINT ignored, and so would the
    child, which would then never see the Ctrl-C a test sends it."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def run_as(uid: int, gid: int, check, umask: int | None = None) -> None:
    """``check()`` in a forked child running as ``uid`` in the one group ``gid`` (and with
    ``umask``); fails when it raises. The child should import nothing new: the interpreter's own
    files may be root's alone, so the caller runs the same code as root first."""
    pid = os.fork()
    if pid == 0:
        status = 1
        try:
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
            if umask is not None:
                os.umask(umask)
            check()
            status = 0
        except BaseException:  # noqa: BLE001 - reported to the parent through the exit status
            traceback.print_exc()
        finally:
            os._exit(status)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, f"the check as uid {uid} failed (traceback above)"
