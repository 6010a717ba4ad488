"""What every command (train.py, eval.py, bench.py, scripts/*.py) does about signals before and after its work.

torch's import takes a second or more, before any handler of the command's own exists: a Ctrl-C in it was a
KeyboardInterrupt traceback from deep inside torch (or one that torch's import of numpy swallowed, the command going
on with numpy half-imported). A command's file, run as one, calls starting() before its slow imports and ends in
run(main, ...): a signal while it starts is one line and a shell's status, its work has Python's own Ctrl-C (which
train.cli turns into its one line), and a signal once it has finished interrupts nothing. Standard library only, so
that it loads at once.
"""
import atexit
import os
import signal
import sys

_before = {}  # the handlers starting() replaced, back after run(): a test that runs a script in-process keeps its own


def _stopped_starting(signum, frame):
    print(f"{'terminated (SIGTERM)' if signum == signal.SIGTERM else 'interrupted'} while starting: nothing was done.",
          file=sys.stderr)
    os._exit(143 if signum == signal.SIGTERM else 130)


def starting():
    """Called by a command's file run as a command (__main__), before its slow imports: a Ctrl-C or SIGTERM until
    run() starts its work ends it with one line, status 130 or 143. A current directory that is gone is one line too
    (torch's import then failed saying "Intel oneMKL FATAL ERROR: Cannot load libtorch_cpu.so", an install's fault)."""
    try:
        os.getcwd()
    except FileNotFoundError:
        print("error: the current directory no longer exists (deleted or moved after the shell entered it): cd to an "
              "existing one and run the command again", file=sys.stderr)
        sys.exit(2)
    for sig in (signal.SIGINT, signal.SIGTERM):
        _before[sig] = signal.signal(sig, _stopped_starting)


def _ignore_signals():
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def run(command, *args):
    """sys.exit(command(*args)): a command's __main__, its work under Python's own handling of signals."""
    signal.signal(signal.SIGINT, signal.default_int_handler)  # from here on, train.cli's handling
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        status = command(*args)
    finally:
        for sig, handler in _before.items():
            signal.signal(sig, handler)
        # done: a signal now would only interrupt Python's exit (a traceback from its clean-up, the work complete).
        # Ignored from Python's exit on, not here: a test that runs a script in its own process goes on
        atexit.register(_ignore_signals)
    sys.exit(status)
