"""Checks run as another user, for what root's privileges would hide (root reads and writes any
file, whatever its mode)."""

import os
import traceback


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
