"""A Ctrl-C is remembered as well as raised, so that one a library swallowed still stops a run
before it publishes.

Python raises a Ctrl-C as KeyboardInterrupt wherever the main thread is. Landing while a C
extension module initialises, it comes out as an ImportError, which a library importing an
optional dependency catches and ignores: the run then went on, and published a version the
service swapped to. ``python -m trainer`` installs the handler first; ``stop_if_interrupted`` is
called once the imports are done and again before a version written into the registry is
renamed into place. SIGTERM (``docker stop``) is handled from the same first moment, as ``Terminated``:
at its default action it killed the trainer while it loaded, with no word and no exit status of its own.
"""

import signal

_received = False


class Terminated(BaseException):
    """SIGTERM (``docker stop``, Kubernetes) raised in the main thread: like Ctrl-C, it unwinds
    through the publisher's clean-up, so no temporary version folder is left behind."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def raise_terminated(signum, frame):
    raise Terminated(signum)


def install() -> None:
    """Raise KeyboardInterrupt on SIGINT, as Python's own handler does, and remember it; raise
    Terminated on SIGTERM."""

    def interrupted(signum, frame):
        global _received
        _received = True
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, interrupted)
    signal.signal(signal.SIGTERM, raise_terminated)


def ignore() -> None:
    """Ignore Ctrl-C and SIGTERM from now on: for a command that has done its work and said what it did,
    they would only cut its exit short. Python sets a signal it handles back to the default action as it
    exits, and the default action of both is to kill the process: a Ctrl-C in that last moment, after a
    version had been published and its last line said so, ended the run with 130 and no word. A signal
    set to be ignored stays ignored."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def stop_if_interrupted() -> None:
    """Raise KeyboardInterrupt if a Ctrl-C came, whatever became of it since."""
    if _received:
        raise KeyboardInterrupt
