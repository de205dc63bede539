"""Overload reported as news, not per request.

waitress logs "Task queue depth is N" each time a request waits for a worker thread: at 16
concurrent clients that was a line for nearly every request (12,000 lines in 48 s), a flood that
hides real errors and fills disks. ``QueueWarningSummary`` swallows those lines and logs one
summary per interval instead, with the numbers: how many requests queued and the deepest queue.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

logger = logging.getLogger(__name__)

# waitress' logger for the queue warning.
WAITRESS_QUEUE_LOGGER = "waitress.queue"
# At most one overload summary per this many seconds.
SUMMARY_INTERVAL_SECONDS = 60.0


class QueueWarningSummary(logging.Filter):
    """A filter for waitress' queue logger: drops every record, counts them, and logs a summary
    at most once per ``interval`` seconds (when the next record arrives after it)."""

    def __init__(
        self,
        threads: int,
        interval: float = SUMMARY_INTERVAL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ):
        super().__init__()
        self._threads = threads
        self._interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        self._window_start = clock()
        self._queued = 0
        self._deepest = 0

    def filter(self, record: logging.LogRecord) -> bool:
        depth = record.args[0] if isinstance(record.args, tuple) and record.args else 0
        with self._lock:
            self._queued += 1
            self._deepest = max(self._deepest, int(depth))
            now = self._clock()
            if now - self._window_start < self._interval:
                return False
            queued, deepest, seconds = self._queued, self._deepest, now - self._window_start
            self._window_start, self._queued, self._deepest = now, 0, 0
        logger.warning(
            "REST overload: %d request(s) waited for one of the %d worker threads in the last "
            "%.0f s (deepest queue %d); add CPU or replicas if this repeats",
            queued,
            self._threads,
            seconds,
            deepest,
        )
        return False


def summarize_waitress_queue_warnings(threads: int) -> QueueWarningSummary:
    """Installs a ``QueueWarningSummary`` on waitress' queue logger (replacing an earlier one)."""
    queue_logger = logging.getLogger(WAITRESS_QUEUE_LOGGER)
    for old in [f for f in queue_logger.filters if isinstance(f, QueueWarningSummary)]:
        queue_logger.removeFilter(old)
    summary = QueueWarningSummary(threads)
    queue_logger.addFilter(summary)
    return summary
