"""``python -m trainer`` and the ``scratchnet-train`` script. The CLI is imported inside the
handling of Ctrl-C: NumPy, pydantic and matplotlib take a moment to load, and a Ctrl-C pressed
meanwhile is one line, as during a run, not a traceback, and stops the run even when a library
swallowed it (``trainer.interrupts``); so is a SIGTERM. Once the command has ended, both are ignored: the
process only exits."""

import sys

from . import interrupts


def main() -> int:
    interrupts.install()  # first: a Ctrl-C during the imports below is remembered too
    try:
        from .cli import main as run_command

        interrupts.stop_if_interrupted()
        status = run_command(on_done=interrupts.ignore)
        interrupts.ignore()  # a command that failed or was stopped has said so too
        return status
    except (KeyboardInterrupt, interrupts.Terminated) as stop:
        terminated = isinstance(stop, interrupts.Terminated)
        try:
            print("terminated" if terminated else "interrupted", file=sys.stderr, flush=True)
        except BrokenPipeError:  # stderr's reader has gone (2>&1 | head): the status still says it
            pass
        return 128 + stop.signum if terminated else 130


if __name__ == "__main__":
    sys.exit(main())
