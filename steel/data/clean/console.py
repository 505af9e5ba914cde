"""Console output of `steel data clean` while datatrove runs its stages.

datatrove logs through loguru: a banner with the pipeline, per-task statistics and "k/n tasks
completed" for every stage, on stderr. Unless `--verbose` is given, Steel sends those messages to
`OUTPUT/work/logs/datatrove.log` (each task's full log stays in `work/logs/STAGE/logs/`), keeps
datatrove's errors on the console, and shows its own progress bar of finished tasks per stage.
"""

import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from datatrove.executor import LocalPipelineExecutor
from tqdm import tqdm

DATATROVE_LOG_NAME = "datatrove.log"
PROGRESS_POLL_SECONDS = 0.5


def route_datatrove_logging(log_path: str) -> None:
    """Send datatrove's loguru messages to `log_path`, and only its errors to stderr, in this process.

    datatrove re-creates its console logger after every task (`setup_default_logger`), so that
    function is replaced too. It is looked up by name when called, which makes the replacement work.
    """
    import datatrove.utils.logging as datatrove_logging

    def setup_quiet_logger() -> None:
        datatrove_logging.logger.remove()
        datatrove_logging.logger.add(sys.stderr, level="ERROR", colorize=datatrove_logging.DATATROVE_COLORIZE_LOGS)
        datatrove_logging.logger.add(log_path, level="DEBUG", mode="a", colorize=False)

    datatrove_logging.setup_default_logger = setup_quiet_logger
    setup_quiet_logger()


@contextmanager
def datatrove_console(log_path: Path | None) -> Iterator[None]:
    """Route datatrove's messages in this process to `log_path` inside the block; None changes nothing."""
    if log_path is None:
        yield
        return

    import datatrove.utils.logging as datatrove_logging

    original_setup = datatrove_logging.setup_default_logger
    log_path.parent.mkdir(parents=True, exist_ok=True)
    route_datatrove_logging(str(log_path))
    try:
        yield
    finally:
        datatrove_logging.setup_default_logger = original_setup
        original_setup()


class QuietLocalPipelineExecutor(LocalPipelineExecutor):
    """datatrove's LocalPipelineExecutor with its messages in a log file and only errors on stderr."""

    def __init__(self, *args, datatrove_log: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.datatrove_log = datatrove_log

    def _launch_run_for_rank(self, rank: int, ranks_q, completed=None, completed_lock=None):
        # With several workers this runs in a fresh worker process, which must be set up again.
        route_datatrove_logging(self.datatrove_log)
        return super()._launch_run_for_rank(rank, ranks_q, completed, completed_lock)

    def _run_for_rank(self, rank: int, local_rank: int = 0, node_rank: int = -1):
        # datatrove 0.10.1 prints a task's INFO messages on stderr only for local_rank 0; the rank is
        # used for nothing else. The task's own log file still gets every message.
        return super()._run_for_rank(rank, local_rank=local_rank + 1, node_rank=node_rank)


@contextmanager
def task_progress(completions_dir: Path, stage: str, num_tasks: int) -> Iterator[None]:
    """Show a progress bar of the stage's finished tasks, counted from datatrove's completion markers."""
    stop = threading.Event()
    bar = tqdm(total=num_tasks, desc=f"stage {stage}", unit=" tasks", file=sys.stderr)

    def count_completions() -> int:
        return sum(1 for _ in completions_dir.iterdir()) if completions_dir.is_dir() else 0

    def advance() -> None:
        # Only a change is drawn, so a log file gets one line per finished task, not one per poll.
        finished = count_completions()
        if finished > bar.n:
            bar.update(finished - bar.n)

    def poll() -> None:
        while not stop.wait(PROGRESS_POLL_SECONDS):
            advance()

    poller = threading.Thread(target=poll, name=f"progress-{stage}", daemon=True)
    poller.start()
    try:
        yield
    finally:
        stop.set()
        poller.join()
        advance()
        bar.close()
