"""The training step: accumulation, gradient normalisation, loss scaling, LR stepping."""

from __future__ import annotations

import copy

import pytest
import torch

from w2v2 import devices
from w2v2.data.dictionary import Dictionary
from w2v2.errors import W2v2Error
from w2v2.models.config import Wav2Vec2Config, Wav2Vec2CtcConfig
from w2v2.models.ctc import Wav2Vec2Ctc
from w2v2.train.loss_scaler import LossScaler
from w2v2.train.losses import ctc_loss
from w2v2.train.lr_schedules import LrScheduler, PolynomialDecayConfig
from w2v2.train.trainer import Trainer

TINY = dict(conv_feature_layers="[(16,10,5)]+[(16,3,2)]*4+[(16,2,2)]*2", encoder_embed_dim=32, encoder_layers=2,
            encoder_ffn_embed_dim=64, encoder_attention_heads=4, conv_pos=8, conv_pos_groups=4, dropout=0.0,
            attention_dropout=0.0)
LETTERS = Dictionary(list("|ABCDE"))


def ctc_criterion(forward, model, batch):
    out = forward(**batch["net_input"])
    return ctc_loss(model, out, batch["target"], LETTERS, sentence_avg=True, target_lengths=batch["target_lengths"])


def make_trainer(scaler=None, ddp: bool = False) -> Trainer:
    """A tiny CTC model and its trainer; `ddp` wraps it for the current process group."""
    torch.manual_seed(0)
    cfg = Wav2Vec2CtcConfig.from_dict({"apply_mask": False})
    model = Wav2Vec2Ctc(cfg, Wav2Vec2Config.from_dict(TINY), len(LETTERS))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    schedule = LrScheduler(PolynomialDecayConfig(warmup_updates=2, total_num_update=10, lr=[1e-3]), optimizer)
    # the CNN (feature_grad_mult 0) and mask_emb (no masking) get no gradients here
    wrapper = torch.nn.parallel.DistributedDataParallel(model, find_unused_parameters=True) if ddp else None
    return Trainer(model, ctc_criterion, optimizer, schedule, torch.device("cpu"), clip_norm=0.0, scaler=scaler,
                   ddp=wrapper)


def make_batch(rows: slice) -> dict:
    generator = torch.Generator().manual_seed(1)
    source = torch.randn(4, 6000, generator=generator)[rows]
    target = torch.tensor([[5, 6, 4, 7], [6, 6, 8, 4], [9, 5, 4, 1], [7, 4, 1, 1]])[rows]
    lengths = (target != LETTERS.pad()).sum(-1)
    return {"id": torch.arange(4)[rows], "net_input": {"source": source}, "target": target,
            "target_lengths": lengths, "ntokens": int(lengths.sum()), "nsentences": len(lengths)}


def test_two_half_batches_make_the_same_update_as_one_full_batch():
    full, halves = make_trainer(), make_trainer()
    full_result = full.train_step([make_batch(slice(0, 4))])
    half_result = halves.train_step([make_batch(slice(0, 2)), make_batch(slice(2, 4))])
    assert full_result.stats["sample_size"] == half_result.stats["sample_size"] == 4
    assert full_result.grad_norm == pytest.approx(half_result.grad_norm, rel=1e-5)
    for a, b in zip(full.model.parameters(), halves.model.parameters()):
        assert torch.allclose(a, b, atol=1e-7)


def test_gradients_are_divided_by_the_sample_size():
    trainer, reference = make_trainer(), make_trainer()
    batch = make_batch(slice(0, 4))
    ctc_criterion(reference.model, reference.model, batch).loss.backward()
    expected = torch.sqrt(sum((p.grad / 4).pow(2).sum() for p in reference.model.parameters() if p.grad is not None))
    result = trainer.train_step([batch])
    assert result.stepped and trainer.num_updates == 1
    assert result.grad_norm == pytest.approx(expected.item(), rel=1e-5)


def overflowing(trainer: Trainer):
    """A hook that makes the output layer's gradient infinite while it is registered."""
    return trainer.model.w2v_encoder.proj.weight.register_hook(lambda grad: grad * float("inf"))


def test_loss_scaling_skips_an_overflowing_update():
    scaler = LossScaler("cpu", True, init_scale=128.0)
    trainer = make_trainer(scaler)
    before = copy.deepcopy(trainer.model.state_dict())
    hook = overflowing(trainer)
    result = trainer.train_step([make_batch(slice(0, 2))])
    hook.remove()
    assert not result.stepped and trainer.num_updates == 0
    assert scaler.get_scale() == 64.0
    assert all(torch.equal(before[k], v) for k, v in trainer.model.state_dict().items())
    assert trainer.train_step([make_batch(slice(0, 2))]).stepped and trainer.num_updates == 1


def test_tolerated_overflows_keep_the_scale_and_the_minimum_stops_training():
    tolerant = make_trainer(LossScaler("cpu", True, init_scale=128.0, scale_window=100, tolerance=0.5))
    for _ in range(2):
        assert tolerant.train_step([make_batch(slice(0, 2))]).stepped
    hook = overflowing(tolerant)
    assert not tolerant.train_step([make_batch(slice(0, 2))]).stepped
    assert tolerant.loss_scale() == 128.0  # 1 overflow in the 3 updates since the start: within the tolerance
    assert not tolerant.train_step([make_batch(slice(0, 2))]).stepped
    hook.remove()
    assert tolerant.loss_scale() == 64.0  # 2 in 4: half, no longer below the tolerance
    strict = make_trainer(LossScaler("cpu", True, init_scale=128.0, min_loss_scale=64.0))
    hook = overflowing(strict)
    with pytest.raises(W2v2Error, match="`common.min_loss_scale`"):
        strict.train_step([make_batch(slice(0, 2))])
    hook.remove()


def test_the_cache_is_emptied_after_updates_1_and_then_every_empty_cache_freq(monkeypatch):
    emptied = []
    trainer = make_trainer(LossScaler("cpu", True))
    monkeypatch.setattr(devices, "empty_cache", lambda device: emptied.append(trainer.num_updates))
    trainer.empty_cache_freq = 2
    for update in range(6):
        hook = overflowing(trainer) if update == 3 else None
        trainer.train_step([make_batch(slice(0, 2))])
        if hook is not None:
            hook.remove()
    assert trainer.num_updates == 5 and emptied == [1, 3, 5]  # fairseq's (updates + freq - 1) % freq == 0
    trainer.empty_cache_freq = 0
    trainer.train_step([make_batch(slice(0, 2))])
    assert emptied == [1, 3, 5]


def test_amp_validates_without_autocast():
    """fairseq's amp autocasts the training forward only; bfloat16 stands in for float16 on the CPU."""
    batch = make_batch(slice(0, 4))
    losses = {}
    for name, precision in (("fp32", devices.Precision(None, False)),
                            ("amp", devices.Precision(torch.bfloat16, False, autocast_validation=False)),
                            ("fp16", devices.Precision(torch.bfloat16, False))):
        trainer = make_trainer()
        trainer.precision = precision
        losses[name] = trainer.valid_step(batch)["loss"]
    assert losses["amp"] == losses["fp32"] != losses["fp16"]


def test_learning_rate_follows_the_update_count():
    trainer = make_trainer()
    assert trainer.lr() == 0.0  # warmup starts from 0: the first update uses lr(0)
    trainer.train_step([make_batch(slice(0, 2))])
    assert trainer.lr() == pytest.approx(5e-4)
    trainer.train_step([make_batch(slice(0, 2))])
    assert trainer.lr() == pytest.approx(1e-3)


def test_clip_norm_bounds_the_update():
    trainer = make_trainer()
    trainer.clip_norm = 1e-3
    trainer.optimizer = torch.optim.SGD(trainer.model.parameters(), lr=1.0)
    trainer.lr_scheduler = LrScheduler(PolynomialDecayConfig(total_num_update=10, lr=[1.0]), trainer.optimizer)
    before = [p.detach().clone() for p in trainer.model.parameters()]
    result = trainer.train_step([make_batch(slice(0, 4))])
    assert result.grad_norm > 1e-3  # the norm before clipping is reported, as fairseq does
    moved = torch.sqrt(sum((p - b).pow(2).sum() for p, b in zip(trainer.model.parameters(), before)))
    assert moved.item() == pytest.approx(1e-3, rel=1e-3)  # an SGD step of lr 1 moves by the clipped norm


def test_repeated_filler_batches_count_for_nothing():
    a, b = make_trainer(), make_trainer()
    batch = make_batch(slice(0, 2))
    filler = {**make_batch(slice(2, 4)), "repeated": True}
    result = a.train_step([batch, filler])
    b.train_step([batch])
    assert result.stats["sample_size"] == 2 and result.stats["batches"] == 1
    for p, q in zip(a.model.parameters(), b.model.parameters()):
        assert torch.allclose(p, q, atol=1e-7)
