"""The worker pool that writes shards in parallel, and how it stops.

How it works:
- A `ProcessPoolExecutor` (forked on Linux, so workers keep the parent's imports) runs
  `tar.write_shard` per shard; results come back in completion order, the caller records them.
  Tasks are submitted as workers free up, one per worker and one queued: a second queued task
  per worker would wait for a worker that is only idle if two finish at the same moment. A
  task names its samples by position; the sample and label tables reach workers once, as they
  start (forked: inherited, not copied), and each worker records its own shard
  (`StateDir.record`): at 11k samples a shard, records sent with each task and location rows
  sent back cost the parent ~27 MB each.
- Workers ignore SIGINT: Ctrl-C in a terminal reaches the whole process group, and only the
  parent should act on it. They are started with SIGINT blocked, so no worker sees it before it
  is ignored. The parent then sets a shared `stop` flag; each worker checks it between two
  samples, removes its unfinished shard and returns, and the parent waits for them: no
  `Pool.terminate`, no worker killed while holding a queue lock, no tracebacks.
- Progress: workers add to two shared counters under their locks; a thread in the parent reads
  them every PROGRESS_INTERVAL_S, without the locks, and hands the totals on.
- The parent never takes a lock a worker may hold: a worker that dies holding one (killed, or
  terminated by the pool because another died) never releases it. A `multiprocessing.Event`
  as the stop flag hung the parent in `stop.set()` when the pool terminated a worker inside
  `is_set()`.
"""

from __future__ import annotations

import multiprocessing
import signal
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from pathlib import Path

import pyarrow as pa

from ..errors import PackError
from ..source import SampleTable
from .state import Recorded, StateDir
from .tar import ShardTask, write_shard

PROGRESS_INTERVAL_S = 0.25
QUEUED = 1  # tasks submitted beyond one per worker


def run_pool(tasks: Iterable[ShardTask], workers: int, progress: Callable[[int, int], None],
             labels: pa.Table, source: SampleTable) -> Iterator[Recorded]:
    """Write shards in worker processes, yielding each as it is done and recorded.

    Tasks are taken from `tasks` as workers free up (at most `workers + QUEUED` are
    submitted), so the parent never holds every shard's label records at once.
    `progress(samples, bytes)` gets the running totals of all workers. On any exit (an
    error, Ctrl-C, the caller closing the generator) the workers stop between two samples.
    Workers take a task's samples from `source` and its label records from `labels`
    (inherited when forked) and write its record themselves: neither samples, records nor
    location rows go through the parent's queues.
    """
    # fork keeps the parent's imports (pyarrow, soundfile); elsewhere the platform default.
    ctx = multiprocessing.get_context("fork" if sys.platform == "linux" else None)
    # The stop flag is a byte without a lock, and the parent reads the counters without theirs:
    # a worker killed while holding a lock (SIGKILL, or the pool terminating it once another
    # died) never releases it, and the parent must not wait for it.
    samples, nbytes, stop = ctx.Value("q", 0), ctx.Value("q", 0), ctx.RawValue("b", 0)
    executor = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker,
                                   initargs=(samples, nbytes, stop, labels, source))
    todo = iter(tasks)
    pending: set[Future] = set()
    finished = threading.Event()
    poller = threading.Thread(target=_follow, args=(progress, samples, nbytes, finished),
                              daemon=True)

    def submit_more() -> None:
        with _sigint_blocked():  # workers start with Ctrl-C blocked, then ignore it
            while len(pending) < workers + QUEUED and (task := next(todo, None)):
                pending.add(executor.submit(_pool_write, task))

    try:
        poller.start()
        try:
            submit_more()
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    pending.discard(future)
                    yield future.result()
                submit_more()
        except BrokenProcessPool as exc:  # from a result, or from submitting to a dead pool
            raise PackError(
                "a pack worker process died (killed, or out of memory?); finished shards are "
                "kept: rerun with --resume, with fewer --workers if memory is short"
            ) from exc
    finally:
        stop.value = 1
        for future in pending:
            future.cancel()
        executor.shutdown(wait=True, cancel_futures=True)
        finished.set()
        if poller.is_alive():
            poller.join()


@contextmanager
def _sigint_blocked() -> Iterator[None]:
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def _follow(progress: Callable[[int, int], None], samples, nbytes,
            finished: threading.Event) -> None:
    """Hand the workers' counters to `progress` until `finished` is set."""
    while True:
        last = finished.wait(PROGRESS_INTERVAL_S)
        progress(samples.get_obj().value, nbytes.get_obj().value)
        if last:
            return


_worker: tuple = ()


def _init_worker(samples, nbytes, stop, labels: pa.Table, source: SampleTable) -> None:
    """Workers leave Ctrl-C to the parent, which stops them through `stop`."""
    global _worker
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    _worker = (samples, nbytes, stop, labels, source)


def _worker_progress(n: int, size: int) -> None:
    samples, nbytes, *_ = _worker
    with samples.get_lock():
        samples.value += n
    with nbytes.get_lock():
        nbytes.value += size


def _stop_asked() -> bool:
    return _worker[2].value != 0


def _pool_write(task: ShardTask) -> Recorded:
    result = write_shard(task, _worker_progress, stop=_stop_asked, labels=_worker[3],
                         samples=_worker[4])
    return StateDir(Path(task.out_root)).record(result)
