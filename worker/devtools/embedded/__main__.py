"""``python -m worker.devtools.embedded``: start the embedded broker and Redis, print the
shell lines that point the ``segworker`` commands at them, run until stopped."""

from __future__ import annotations

import contextlib
import os
import signal
import sys

from worker.devtools.embedded import embedded_stack, shell_lines


def _stop_on_signal(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> None:  # pragma: no cover - manual use
    # A shell starts a background job (`... > stack.env &`) with SIGINT ignored, and Python
    # would then never raise KeyboardInterrupt; SIGTERM and SIGHUP would end the process
    # without its clean-up. Handle all three alike: the servers stop, their directories go.
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _stop_on_signal)
    with contextlib.suppress(KeyboardInterrupt), embedded_stack() as (kafka, redis):
        # One write: a reader of the redirected output sees all lines or none.
        sys.stdout.write(shell_lines(kafka.bootstrap_servers, redis.url, os.getpid()))
        sys.stdout.flush()
        print("embedded broker and Redis running; Ctrl-C stops them", file=sys.stderr, flush=True)
        signal.pause()


if __name__ == "__main__":  # pragma: no cover
    main()
