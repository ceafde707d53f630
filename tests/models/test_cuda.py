"""The models on a CUDA device: the same numbers as on the CPU in fp32, and a finite bf16 training step.

Skipped without a GPU; benchmarks/gpu_check.sh runs them on one."""

from __future__ import annotations

import pytest
import torch

from w2v2.models.config import Wav2Vec2Config, Wav2Vec2CtcConfig
from w2v2.models.ctc import Wav2Vec2Ctc
from w2v2.models.wav2vec2 import Wav2Vec2Model
from tests.models.conftest import TINY

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _batch() -> tuple:
    source = torch.randn(2, 16000, generator=torch.Generator().manual_seed(0))
    padding = torch.zeros(2, 16000, dtype=torch.bool)
    padding[1, 11000:] = True
    return source.masked_fill(padding, 0.0), padding


@pytest.fixture(autouse=True)
def _exact_matmuls():
    """TF32 would make fp32 CUDA matmuls differ from the CPU's by ~1e-3."""
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def test_pretraining_features_on_cuda_equal_the_cpus():
    torch.manual_seed(0)
    model = Wav2Vec2Model(Wav2Vec2Config.from_dict(TINY)).eval()
    source, padding = _batch()
    with torch.no_grad():
        cpu = model(source, padding, mask=False, features_only=True)["x"]
        gpu = model.cuda()(source.cuda(), padding.cuda(), mask=False, features_only=True)["x"].cpu()
    assert torch.allclose(cpu, gpu, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("checkpointed", [False, True])
def test_bf16_ctc_training_step_on_cuda_is_finite_and_changes_the_weights(checkpointed):
    torch.manual_seed(0)
    cfg = Wav2Vec2CtcConfig.from_dict({"checkpoint_activations": checkpointed, "feature_grad_mult": 0.0})
    model = Wav2Vec2Ctc(cfg, Wav2Vec2Config.from_dict(TINY), 12).cuda().train()
    before = model.w2v_encoder.proj.weight.detach().clone()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0, fused=True)
    source, padding = _batch()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = model(source.cuda(), padding.cuda())
    loss = out["encoder_out"].float().pow(2).mean()
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss)
    assert not torch.equal(before, model.w2v_encoder.proj.weight.detach())
