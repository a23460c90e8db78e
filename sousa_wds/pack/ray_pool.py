"""Shard writing as Ray tasks (`sousa-wds pack --ray [ADDRESS]`): the cluster writes the shards,
the parent keeps planning, the pack state, the indexes and the manifest.

How it works:
- `run_ray(tasks, address, progress)` connects to Ray (`ray.init(address)`; an instance already
  initialised in this process is used as is, and one started here is shut down at the end) and
  submits one task per shard running `tar.write_shard`: the same function on the same fully
  planned `ShardTask` as a local worker, so the bytes do not depend on who writes them. Every
  node must see the source and OUT at the same absolute paths (shared storage), as on the SOUSA
  generator's Ray cluster.
- Results come back in completion order (`ray.wait`); the caller records each in the pack state,
  so an interrupted run continues with `--resume` like a local one. Progress counts whole shards.
- On any early exit (an error, Ctrl-C, the caller closing the generator) the pending tasks are
  cancelled; `write_shard` removes the temporary file of a shard it did not finish.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from ..errors import PackError, SousaWdsError
from .tar import ShardResult, ShardTask, write_shard

# Seconds between checks for finished tasks (and for Ctrl-C in the parent).
WAIT_TIMEOUT_S = 1.0


def run_ray(tasks: list[ShardTask], address: str | None,
            progress: Callable[[int, int], None]) -> Iterator[ShardResult]:
    """Write shards as Ray tasks, yielding each result as it is done.

    `address`: a Ray cluster (`ray://host:10001`, `host:6379`, `auto`); None lets Ray choose
    (RAY_ADDRESS, else a local instance). `progress(samples, bytes)` is called per shard."""
    try:
        import ray
    except ImportError:
        raise PackError("--ray needs Ray: pip install 'sousa-wds[ray]'") from None
    started = not ray.is_initialized()
    if started:
        ray.init(address=address, log_to_driver=False)
    write = ray.remote(num_cpus=1, max_retries=0)(write_shard)
    pending = {write.options(name=f"sousa-wds-shard-{t.name}").remote(t): t for t in tasks}
    try:
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1, timeout=WAIT_TIMEOUT_S)
            for ref in done:
                task = pending.pop(ref)
                yield _result(ray, ref, task)  # recorded by the caller before progress runs
                assert task.samples is not None, "Ray tasks carry their samples"
                progress(len(task.samples), task.samples.media_bytes())
    finally:
        for ref in pending:
            ray.cancel(ref)
        if pending:
            ray.wait(list(pending), num_returns=len(pending), timeout=60)
        if started:
            ray.shutdown()


def _result(ray, ref, task: ShardTask) -> ShardResult:  # noqa: ANN001 - the lazily imported module
    """The task's ShardResult; its error as ours (a SousaWdsError from write_shard as is)."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as exc:
        if isinstance(exc.cause, SousaWdsError):
            raise exc.cause from None
        raise PackError(f"writing {task.path} failed on a Ray worker: {exc.cause!r}; finished "
                        "shards are kept: rerun with --resume") from exc
    except ray.exceptions.RayError as exc:
        raise PackError(f"writing {task.path}: the Ray worker or node died ({exc}); finished "
                        "shards are kept: rerun with --resume") from exc
