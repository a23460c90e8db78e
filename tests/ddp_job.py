"""One rank of a real torch.distributed job over sousa-wds streams, started the way torchrun starts
ranks (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT in the environment; gloo on 127.0.0.1).

    python -m tests.ddp_job CONFIG.json OUT.json

How it works:
- Every rank initialises the process group and then builds its streams with the public API only,
  without passing rank or world size: the stream must find them in torch.distributed.
- For each scenario of CONFIG it iterates `stream.loader(...)` (DataLoader workers) over the
  listed epochs with `set_epoch`, recording every delivered (key, padding) in delivery order;
  the resume scenario stops mid-epoch, saves `state_dict()` and continues in a fresh stream.
- The ranks exchange what they saw with `all_gather_object`; rank 0 writes the gathered
  results to OUT for tests/test_distributed.py to check. Checks happen there, not here.
"""

from __future__ import annotations

import json
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch.distributed as dist

import sousa_wds

# A rank that hangs in a collective (unequal batch counts) fails the job instead of the test run.
COLLECTIVE_TIMEOUT = timedelta(seconds=120)


def _pairs(batch: list[dict]) -> list[tuple[str, bool]]:
    return [(sample["key"], bool(sample["padding"])) for sample in batch]


def _open(scenario: dict[str, Any]) -> Any:
    """The scenario's stream and loader on this rank (a token per rank tells them apart)."""
    token = f"rank{dist.get_rank()}" if scenario.get("token") else None
    ds = sousa_wds.stream(scenario["source"], "train", decode=False, token=token,
                          **scenario.get("options", {}))
    return ds.loader(batch_size=scenario["batch_size"], num_workers=scenario["workers"],
                     collate_fn=_pairs)


def _epochs(scenario: dict[str, Any]) -> dict[str, Any]:
    loader = _open(scenario)
    seen, batches = [], []
    for epoch in scenario["epochs"]:
        loader.set_epoch(epoch)
        delivered = [batch for batch in loader]
        seen.append([pair for batch in delivered for pair in batch])
        batches.append(len(delivered))
    return {"epochs": seen, "batches": batches, "len": len(loader)}


def _resume(scenario: dict[str, Any]) -> dict[str, Any]:
    """Stop after `stop_after` batches of the epoch, save, and finish the epoch in a new stream."""
    loader = _open(scenario)
    loader.set_epoch(scenario["epoch"])
    batches = iter(loader)
    before = [pair for _ in range(scenario["stop_after"]) for pair in next(batches)]
    state = json.loads(json.dumps(loader.state_dict()))  # what a checkpoint file holds
    del batches  # shuts the DataLoader workers down, as a killed job would lose them
    resumed = _open(scenario)
    resumed.load_state_dict(state)
    resumed.set_epoch(scenario["epoch"])  # keeps the loaded state of the same epoch
    after = [pair for batch in resumed for pair in batch]
    return {"before": before, "after": after, "state": state, "end": resumed.state_dict()}


def main(config_path: str, out_path: str) -> None:
    dist.init_process_group("gloo", timeout=COLLECTIVE_TIMEOUT)
    config = json.loads(Path(config_path).read_text())
    mine = {}
    for name, scenario in config.items():
        mine[name] = _resume(scenario) if "stop_after" in scenario else _epochs(scenario)
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, mine)
    if dist.get_rank() == 0:
        Path(out_path).write_text(json.dumps(gathered))
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(*sys.argv[1:])
