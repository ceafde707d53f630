"""One rank of the 2-process gloo tests (a module of its own so spawned processes can import it)."""

from __future__ import annotations

from pathlib import Path

import torch


def run(rank: int, world_size: int, store: str, output: str, steps: int, standin: bool = False) -> None:
    """Train the tiny CTC model on this rank's half of each batch; rank 0 saves the weights.

    With `standin` the device layer runs its NPU branches against tests/standin_npu.py (HCCL's
    collective dtypes enforced), the loss is scaled, and rank 1 alone overflows in saturation mode in
    the first update, which both ranks must skip; rank 0 also saves both ranks' device RNG states. Every
    rank then leaves the process group as the end of a run does."""
    from tests import standin_npu
    from tests.train.test_trainer import make_batch, make_trainer
    from w2v2.train.checkpointing import gather_device_rng
    from w2v2.train.loss_scaler import LossScaler
    from w2v2.train.setup import ProcessInfo, init_process_group, leave_process_group

    torch.set_num_threads(1)
    init_process_group(ProcessInfo(rank, rank, world_size, world_size), torch.device("cpu"),
                       init_method=f"file://{store}")
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
    trainer.release_ddp()
    leave_process_group()
    # gloo's worker threads were joined here, not at interpreter exit, where one still freeing the last
    # collective's tensors aborts the process (before: in about one run of test_distributed.py in 25)
    assert not gloo_threads(), gloo_threads()


def gloo_threads() -> list:
    """The names of this process's threads that belong to a gloo process group (Linux names them)."""
    return [name for name in (path.read_text().strip() for path in Path("/proc/self/task").glob("*/comm"))
            if "gloo" in name]
