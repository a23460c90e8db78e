"""A process per core for read-only work: `verify`'s shard checks, `check`'s media probe.

How it works:
- `process_map(workers)` yields a `map` whose calls run in forked worker processes (results in
  input order), or the built-in `map` when one worker is enough or the platform cannot fork:
  starting fresh interpreters would cost more than these jobs save.
- Processes, not threads: the jobs mix GIL-free calls (hashing, libsndfile, file reads) with
  Python that holds the GIL between them, and two threads measured no faster than one.
- The processes are forked when the pool is made, by the calling thread, so a caller may run
  its own threads beside the pool (`check` reads label tables while the media are checked).
- Workers ignore Ctrl-C, which the terminal sends to the whole process group: the parent gets
  the KeyboardInterrupt and terminates them (they only read: stopping them loses nothing)
  instead of waiting for their batches.
- A worker that dies (killed, out of memory, a crash in a C library on a hostile file) raises
  the caller's named error, not a raw `BrokenProcessPool`.
"""

from __future__ import annotations

import multiprocessing
import signal
import sys
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager

from .errors import SousaWdsError


@contextmanager
def process_map(workers: int, died: SousaWdsError) -> Iterator[Callable[..., Iterable]]:
    """`map` over `workers` forked processes, or in this process when that is not worth it.

    `died` is raised (from the `BrokenProcessPool`) if a worker process dies.
    """
    if workers <= 1 or sys.platform != "linux":
        yield map
        return
    before = set(multiprocessing.active_children())
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"),
                               initializer=_ignore_sigint)
    started: list[multiprocessing.process.BaseProcess] = []
    # A fork pool starts all its processes at the first submit: do it now, in the caller's
    # thread, before the caller starts threads of its own (a child forked while another
    # thread holds a lock could wait on it forever).
    try:
        pool.submit(int)
        started = [p for p in multiprocessing.active_children() if p not in before]
        yield pool.map
    except BrokenProcessPool as exc:
        raise died from exc
    except BaseException:
        # Stopped (Ctrl-C) or failed: the workers only read, so end them now. A graceful
        # shutdown waits for the batches they run, and a second Ctrl-C inside it could leave
        # them waiting forever for the sentinel it was sending (the interpreter then joins
        # them at exit: measured, 8 hangs in 40 double Ctrl-Cs).
        for process in started:
            process.terminate()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
