"""Two gloo processes with DDP make the same updates as one process accumulating both halves, also
through the stand-in NPU (HCCL's dtypes, saturation-mode overflow on one rank, per-rank device RNG)."""

from __future__ import annotations

import torch
import torch.multiprocessing as mp

from tests import standin_npu
from tests.train import ddp_worker
from tests.train.test_trainer import make_batch, make_trainer


def single_process_weights(updates: int) -> dict:
    """The weights after `updates` updates of one process accumulating both halves of every batch."""
    torch.set_num_threads(1)
    single = make_trainer()
    for _ in range(updates):
        single.train_step([make_batch(slice(0, 2)), make_batch(slice(2, 4))])
    return single.model.state_dict()


def test_two_process_ddp_matches_update_freq_two(tmp_path):
    steps = 2
    mp.spawn(ddp_worker.run, args=(2, str(tmp_path / "store"), str(tmp_path / "ddp.pt"), steps), nprocs=2)
    ddp_weights = torch.load(tmp_path / "ddp.pt", weights_only=True)["weights"]
    for name, value in single_process_weights(steps).items():
        assert torch.allclose(value, ddp_weights[name], atol=1e-6), name


def test_two_process_ddp_through_the_standin_npu(tmp_path):
    steps = 3
    mp.spawn(ddp_worker.run, args=(2, str(tmp_path / "store"), str(tmp_path / "ddp.pt"), steps, True), nprocs=2)
    saved = torch.load(tmp_path / "ddp.pt", weights_only=True)
    # rank 1's saturated update was skipped by both ranks (each asserts it), and it halved the loss scale
    assert saved["stepped"] == [False, True, True] and saved["loss_scale"] == 64.0
    for name, value in single_process_weights(steps - 1).items():
        assert torch.allclose(value, saved["weights"][name], atol=1e-6), name
    fresh = standin_npu.FakeNpu()
    assert [state.tolist() for state in saved["rng"]] == [fresh.get_rng_state(index).tolist() for index in (0, 1)]
    assert not torch.equal(saved["rng"][0], saved["rng"][1])
