"""A process-wide stop request (set by a signal handler, honoured at safe points)."""

from __future__ import annotations

import threading

stop_requested = threading.Event()
"""Set when the process was asked to stop (SIGTERM). Long loops check it between steps: an
exception raised straight from a signal handler can land in a finalizer and be swallowed."""


class StopRequested(KeyboardInterrupt):
    """Raised for SIGTERM. Caught wherever Ctrl-C is, but a subclass on purpose: CPython makes
    the process die of SIGINT at exit (status -2, whatever the code returned) when a *plain*
    KeyboardInterrupt escapes code it evaluated, e.g. one landing inside an import."""
