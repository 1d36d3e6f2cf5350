"""The Redis store's modules import structlog only when they log, and then log as structlog does."""

from __future__ import annotations

import subprocess
import sys

from structlog.testing import capture_logs

from verdict.telemetry.lazy_log import get_logger


def test_the_entities_load_command_imports_no_structlog_until_a_line_is_logged() -> None:
    probe = (
        "import sys; import verdict.cli.entities_redis, verdict.store.redis_decode as d; "
        "print('structlog' in sys.modules); d.log.bind; print('structlog' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.split() == ["False", "True"]


def test_a_lazy_logger_logs_as_structlog_does() -> None:
    log = get_logger("verdict.test")
    with capture_logs() as captured:
        log.warning("redis_lineage_off", store="lending")
        log.bind(worker=1).info("bound")
    assert captured == [
        {"event": "redis_lineage_off", "store": "lending", "log_level": "warning"},
        {"event": "bound", "worker": 1, "log_level": "info"},
    ]
