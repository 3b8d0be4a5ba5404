"""A process-wide stop request (set by a signal handler, honoured at safe points)."""

from __future__ import annotations

import threading

stop_requested = threading.Event()
"""Set when the process was asked to stop (SIGTERM). Long loops check it between steps: an
exception raised straight from a signal handler can land in a finalizer and be swallowed."""
