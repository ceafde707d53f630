"""One rank of the 2-process gloo test (a module of its own so spawned processes can import it)."""

from __future__ import annotations

import torch
import torch.distributed as dist


def run(rank: int, world_size: int, store: str, output: str, steps: int) -> None:
    """Train the tiny CTC model on this rank's half of each batch; rank 0 saves the weights."""
    from tests.train.test_trainer import make_batch, make_trainer

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world_size)
    trainer = make_trainer(ddp=True)
    for _ in range(steps):
        result = trainer.train_step([make_batch(slice(2 * rank, 2 * rank + 2))])
        assert result.stats["sample_size"] == 4  # summed over both ranks
    if rank == 0:
        torch.save(trainer.model.state_dict(), output)
    dist.destroy_process_group()
