"""The private directory a server's worker processes share their metrics through.

prometheus-client's multiprocess mode: every worker writes its metrics to memory-mapped files
in ``PROMETHEUS_MULTIPROC_DIR`` and a scrape, answered by any worker, merges all the files. The
library picks its mode once, when it is first imported, from that variable, so the server
command sets it before anything imports prometheus-client (this module does not), and the
workers, forked or spawned, inherit it.

The directory is new for each server start (no worker of an earlier run can be counted), made
by :func:`tempfile.mkdtemp` (mode 0700: the counts are nobody else's to read or forge), and
removed when the server exits. A server killed with SIGKILL leaves it behind in the temporary
directory (``TMPDIR``).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["MULTIPROC_ENV", "shared_metrics_dir"]

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
"""The variable prometheus-client reads at import to choose its multiprocess mode."""

log = logging.getLogger("fraudscore.metrics")


@contextmanager
def shared_metrics_dir() -> Iterator[Path]:
    """A new private directory, set as ``PROMETHEUS_MULTIPROC_DIR`` for this process and its
    children while the block runs; removed (and the variable restored) after.

    Enter it before prometheus-client is imported: a worker forked from a process that
    imported it without the variable would stay in single-process mode, and refuses to start
    (:class:`~fraudscore_adapters.monitoring.prom.Metrics` checks).
    """
    before = os.environ.get(MULTIPROC_ENV)
    if before is not None:
        log.warning(
            "%s=%s is replaced by a private directory of this server", MULTIPROC_ENV, before
        )
    path = Path(tempfile.mkdtemp(prefix="fraudscore-metrics-"))
    os.environ[MULTIPROC_ENV] = str(path)
    try:
        yield path
    finally:
        if before is None:
            os.environ.pop(MULTIPROC_ENV, None)
        else:
            os.environ[MULTIPROC_ENV] = before
        shutil.rmtree(path, ignore_errors=True)
