"""Log lines go through a buffer (``observability.BufferedStreamHandler``), not a system
call each, and none is lost: an INFO line is on the file within the flush interval, a
WARNING at once, and every line by the time the process exits, in order."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

from broker import observability

ROOT = Path(__file__).resolve().parents[2]


def _lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line]


def test_info_is_written_within_the_interval_and_a_warning_at_once(tmp_path: Path) -> None:
    path = tmp_path / "log"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT)
    handler = observability.BufferedStreamHandler(fd, flush_s=0.3)
    handler.setFormatter(observability.JsonFormatter())
    logger = logging.getLogger("test.buffered")
    logger.addHandler(handler)
    logger.propagate, logger.level = False, logging.INFO
    try:
        logger.info("one")
        assert _lines(path) == []  # buffered: no write yet
        deadline = time.monotonic() + 5
        while not _lines(path) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert [r["msg"] for r in _lines(path)] == ["one"]
        logger.info("two")
        logger.warning("three")  # written at once, with what was before it
        assert [r["msg"] for r in _lines(path)] == ["one", "two", "three"]
    finally:
        logger.removeHandler(handler)
        handler.close()
        os.close(fd)


def test_every_line_is_written_by_exit(tmp_path: Path) -> None:
    path = tmp_path / "log"
    code = (
        "import logging\n"
        "from broker import observability\n"
        "observability.configure_logging('json', 'INFO')\n"
        "log = logging.getLogger('broker.access')\n"
        "for i in range(5000): log.info('line %d', i)\n"
    )
    with path.open("wb") as err:
        subprocess.run([sys.executable, "-c", code], cwd=ROOT, stderr=err, check=True)
    assert [r["msg"] for r in _lines(path)] == [f"line {i}" for i in range(5000)]
