"""Two gloo processes with DDP make the same updates as one process accumulating both halves."""

from __future__ import annotations

import torch
import torch.multiprocessing as mp

from tests.train import ddp_worker
from tests.train.test_trainer import make_batch, make_trainer


def test_two_process_ddp_matches_update_freq_two(tmp_path):
    steps = 2
    mp.spawn(ddp_worker.run, args=(2, str(tmp_path / "store"), str(tmp_path / "ddp.pt"), steps), nprocs=2)
    torch.set_num_threads(1)
    single = make_trainer()
    for _ in range(steps):
        single.train_step([make_batch(slice(0, 2)), make_batch(slice(2, 4))])
    ddp_weights = torch.load(tmp_path / "ddp.pt", weights_only=True)
    for name, value in single.model.state_dict().items():
        assert torch.allclose(value, ddp_weights[name], atol=1e-6), name
