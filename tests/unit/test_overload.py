"""The waitress queue warning becomes one summary per interval."""

from __future__ import annotations

import logging

from serving.model_server.overload import QueueWarningSummary


def queue_record(depth: int) -> logging.LogRecord:
    return logging.LogRecord(
        "waitress.queue", logging.WARNING, __file__, 1, "Task queue depth is %d", (depth,), None
    )


def test_queue_warnings_are_swallowed_and_summarised_once_per_interval(caplog):
    now = [0.0]
    summary = QueueWarningSummary(threads=8, interval=60, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="serving.model_server.overload"):
        for second in range(59):
            now[0] = float(second)
            assert summary.filter(queue_record(depth=1 + second % 5)) is False
        assert caplog.records == []  # nothing logged inside the interval
        now[0] = 61.0
        assert summary.filter(queue_record(depth=2)) is False
        now[0] = 62.0
        summary.filter(queue_record(depth=9))
    (line,) = caplog.records
    assert line.getMessage() == (
        "REST overload: 60 request(s) waited for one of the 8 worker threads in the last 61 s "
        "(deepest queue 5); add CPU or replicas if this repeats"
    )
