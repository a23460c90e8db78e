"""Train a small skill-tier classifier on SOUSA with the sousa-wds loader.

DataLoader workers, DDP-ready, and resumable in the middle of an epoch:

    python examples/train_pytorch.py PACKED_FOLDER_OR_REPO --epochs 2 --workers 2
    torchrun --nproc_per_node 2 examples/train_pytorch.py PACKED_FOLDER_OR_REPO
    python examples/train_pytorch.py SOURCE --checkpoint run.pt   # rerun the same line to resume

How it works: every rank streams its own share of the train split (`sousa_wds.stream` reads
RANK/WORLD_SIZE or torch.distributed), shuffled per epoch with `set_epoch`. Ranks get the same
number of batches; the few samples repeated to even them out have `padding=True` and are left
out of the loss. The checkpoint holds the loader's state, so a rerun continues the epoch where
it stopped, without repeating or skipping a sample. The model is deliberately tiny: log band
energies of a mono STFT, then one linear layer.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F

import sousa_wds

TIERS = ("beginner", "intermediate", "advanced", "professional")
SECONDS = 3.0  # every clip is cropped or zero-padded to this length
N_FFT = 1024


def collate(samples: list[dict]) -> dict[str, torch.Tensor]:
    """Fixed-length mono audio, tier index and the padding mask of a batch."""
    rate = samples[0]["sample_rate"]
    length = int(SECONDS * rate)
    audio = torch.zeros(len(samples), length)
    for i, sample in enumerate(samples):
        clip = sample["audio"][0, :length]  # mono=True: (1, frames)
        audio[i, : clip.shape[0]] = clip
    return {
        "audio": audio,
        "tier": torch.tensor([TIERS.index(s["labels"]["skill_tier"]) for s in samples]),
        "real": torch.tensor([not s["padding"] for s in samples]),
    }


class BandEnergy(torch.nn.Module):
    def __init__(self, classes: int) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(N_FFT // 2 + 1, classes)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        window = torch.hann_window(N_FFT, device=audio.device)
        spec = torch.stft(audio, N_FFT, hop_length=N_FFT // 2, window=window, return_complex=True)
        features = torch.log1p(spec.abs().mean(dim=-1))  # (batch, bins)
        return self.linear(features)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("source", help="packed folder, http(s) URL, user/name or hf://datasets/...")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--max-steps", type=int, default=None, help="stop after N steps in all")
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="save model + optimizer + loader state here after every step, and "
                        "resume from it when it exists")
    args = parser.parse_args()

    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if distributed:
        dist.init_process_group("gloo")  # CPU; use "nccl" on GPUs
    rank = dist.get_rank() if distributed else 0

    model = BandEnergy(len(TIERS))
    if distributed:
        model = torch.nn.parallel.DistributedDataParallel(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

    samples = sousa_wds.stream(args.source, "train", mono=True, tensors=True, seed=0)
    loader = samples.loader(batch_size=args.batch_size, num_workers=args.workers,
                            collate_fn=collate)
    first_epoch = 0
    if args.checkpoint and args.checkpoint.exists():
        state = torch.load(args.checkpoint, weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        loader.load_state_dict(state["data"])  # same on every rank: ranks run in lockstep
        first_epoch = loader.epoch
        print(f"[rank {rank}] resuming epoch {first_epoch} from {args.checkpoint}")

    def save() -> None:
        if args.checkpoint and rank == 0:
            torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                        "data": loader.state_dict()}, args.checkpoint)

    step = 0
    for epoch in range(first_epoch, args.epochs):
        loader.set_epoch(epoch)  # a new order each epoch; keeps a resumed epoch's state
        seen = correct = 0
        loss_sum = 0.0
        for batch in loader:
            logits = model(batch["audio"])
            losses = F.cross_entropy(logits, batch["tier"], reduction="none")
            real = batch["real"].float()
            loss = (losses * real).sum() / real.sum().clamp(min=1)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            seen += int(real.sum())
            loss_sum += float(losses.detach() @ real)
            correct += int(((logits.argmax(-1) == batch["tier"]).float() * real).sum())
            step += 1
            save()  # at the epoch's last batch: the epoch, its end-of-epoch work still to run
            if args.max_steps and step >= args.max_steps:
                break
        print(f"[rank {rank}] epoch {epoch}: {seen} samples, mean loss "
              f"{loss_sum / max(seen, 1):.3f}, train accuracy {correct / max(seen, 1):.2f}")
        save()  # after the epoch's own work: a finished pass points at the next epoch
        if args.max_steps and step >= args.max_steps:
            break
    if distributed:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
