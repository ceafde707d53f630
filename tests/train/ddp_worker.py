"""One rank of the 2-process gloo tests (a module of its own so spawned processes can import it)."""

from __future__ import annotations

import torch
import torch.distributed as dist


def run(rank: int, world_size: int, store: str, output: str, steps: int, standin: bool = False) -> None:
    """Train the tiny CTC model on this rank's half of each batch; rank 0 saves the weights.

    With `standin` the device layer runs its NPU branches against tests/standin_npu.py (HCCL's
    collective dtypes enforced), the loss is scaled, and rank 1 alone overflows in saturation mode in
    the first update, which both ranks must skip; rank 0 also saves both ranks' device RNG states."""
    from tests import standin_npu
    from tests.train.test_trainer import make_batch, make_trainer
    from w2v2.train.checkpointing import gather_device_rng
    from w2v2.train.loss_scaler import LossScaler

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world_size)
    npu = standin_npu.install(None) if standin else None
    if npu is not None:
        npu.set_device(rank)
    trainer = make_trainer(LossScaler(torch.device("cpu"), True, init_scale=128.0) if standin else None, ddp=True)
    stepped = []
    for step in range(steps):
        overflows_here = npu is not None and rank == 1 and step == 0
        hook = standin_npu.saturate(trainer.model.w2v_encoder.proj.weight, npu) if overflows_here else None
        result = trainer.train_step([make_batch(slice(2 * rank, 2 * rank + 2))])
        if hook is not None:
            hook.remove()
        assert result.stats["sample_size"] == 4  # summed over both ranks
        stepped.append(result.stepped)
    assert stepped == [not standin or step > 0 for step in range(steps)]  # on every rank
    rng = gather_device_rng(torch.device("cpu"))
    if rank == 0:
        torch.save({"weights": trainer.model.state_dict(), "stepped": stepped, "rng": rng,
                    "loss_scale": trainer.loss_scale()}, output)
    # a rank that tears gloo down while the other is still saving aborted its process ("terminate called
    # without an active exception") in about half the runs on torch 2.13; both finish first
    dist.barrier()
    dist.destroy_process_group()
