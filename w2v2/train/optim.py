"""fairseq's `adam` optimizer: Adam with decoupled weight decay, built as torch.optim.AdamW.

fairseq hands every trainable parameter of the model (and criterion) to one parameter group, so
wav2vec 2.0 decays biases, layer norms and `mask_emb` alike; we do the same. One difference is
kept on purpose for speed (fused/foreach kernels): fairseq adds `adam_eps` to sqrt(v) before the
bias correction, torch after it, so eps weighs sqrt(1 - beta2^t) less in fairseq. The two agree
once 1 - beta2^t is close to 1 (a few hundred updates with beta2 = 0.98) and whenever
sqrt(v) >> eps.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Optional, Tuple, Union

import torch
from torch.utils._foreach_utils import _get_fused_kernels_supported_devices

from w2v2.errors import W2v2Error
from w2v2.schema import Group, at_least, default_only, no_effect, require


@dataclass
class AdamConfig(Group):
    """`optimizer._name: adam` with fairseq's fields and defaults."""

    _name: str = "adam"
    adam_betas: str = "(0.9, 0.999)"  # a Python tuple literal, as fairseq's YAMLs write it
    adam_eps: float = 1e-8
    weight_decay: float = 0.0  # decoupled: every update multiplies the weights by 1 - lr * weight_decay
    use_old_adam: bool = no_effect(False)  # fairseq's choice between two Adam implementations
    fp16_adam_stats: bool = default_only(False, "float16 Adam moments are not implemented")
    tpu: Optional[bool] = no_effect(None, link="common.tpu")
    lr: Optional[List[float]] = no_effect(None, link="optimization.lr")  # the schedule sets the lr before each update

    @classmethod
    def prepare(cls, values: Dict[str, Any]) -> Dict[str, Any]:
        """fairseq's YAMLs may write adam_betas as a list."""
        if isinstance(values.get("adam_betas"), (list, tuple)):
            values["adam_betas"] = format_betas(values["adam_betas"])
        return values

    def check(self, where: str) -> None:
        parse_betas(self.adam_betas, f"{where}.adam_betas")
        require(self.adam_eps > 0, f"{where}.adam_eps", f"must be > 0, but is {self.adam_eps} instead.")
        at_least(self.weight_decay, 0, f"{where}.weight_decay")


def parse_betas(value: Any, where: str = "optimizer.adam_betas") -> Tuple[float, float]:
    """Read `(0.9,0.98)` (a string, as in fairseq's YAMLs) or a two-item list into two floats."""
    parsed = value
    if isinstance(value, str):
        try:
            parsed = ast.literal_eval(value.strip())
        except (SyntaxError, ValueError):
            parsed = None
    if (
        isinstance(parsed, (list, tuple))
        and len(parsed) == 2
        and all(isinstance(b, (int, float)) and not isinstance(b, bool) and 0 <= b < 1 for b in parsed)
    ):
        return float(parsed[0]), float(parsed[1])
    raise W2v2Error(f"`{where}` must be two numbers in [0, 1) such as \"(0.9,0.98)\", but is {value!r} instead.")


def format_betas(value: Any) -> str:
    """The string form fairseq stores, e.g. `(0.9,0.98)`, from a string, list or tuple."""
    if isinstance(value, str):
        return value
    return "(" + ",".join(str(b) for b in value) + ")"


def build_optimizer(
    params_or_model: Union[torch.nn.Module, Iterable[torch.nn.Parameter]], cfg: AdamConfig
) -> torch.optim.AdamW:
    """AdamW over the trainable parameters, one group, with the config's betas, eps and decay."""
    if isinstance(params_or_model, torch.nn.Module):
        params_or_model = params_or_model.parameters()
    params = [p for p in params_or_model if p.requires_grad]
    if not params:
        raise W2v2Error("the optimizer got no trainable parameters (every parameter has requires_grad=False).")
    lr = float(cfg.lr[0]) if cfg.lr else 0.0
    # One fused kernel over all tensors instead of ~10 small ops per parameter (torch's default on CPU is
    # the per-parameter loop); devices without a fused kernel get the multi-tensor (foreach) path.
    fused = all(p.device.type in _get_fused_kernels_supported_devices() for p in params)
    optimizer = torch.optim.AdamW(
        params, lr=lr, betas=parse_betas(cfg.adam_betas), eps=cfg.adam_eps, weight_decay=cfg.weight_decay,
        fused=fused or None, foreach=None if fused else True,
    )
    allocate_state(optimizer)
    return optimizer


def allocate_state(optimizer: torch.optim.AdamW) -> None:
    """Give every parameter the state torch's AdamW makes on its first step (step 0, zero moments) now.

    Made lazily, the moments (2 x the trainable weights) are placed among the freed buffers of the first
    batch's activations, which every later batch then has to fit around: at BASE fine-tuning on the CPU the
    peak RSS was ~0.1-0.15 GB higher (benchmarks/README.md). The first step drops the state of parameters that
    got no gradient (a frozen CNN), so from then on the state is what lazy initialisation would have made."""
    for group in optimizer.param_groups:
        # torch's own choice of the step counter's dtype and device (Adam._init_group)
        on_device = group["fused"] or group["capturable"]
        wide = not group["fused"] and torch.get_default_dtype() == torch.float64
        for p in group["params"]:
            step = torch.zeros((), dtype=torch.float64 if wide else torch.float32,
                               device=p.device if on_device else "cpu")
            state = {"step": step, "exp_avg": torch.zeros_like(p, memory_format=torch.preserve_format),
                     "exp_avg_sq": torch.zeros_like(p, memory_format=torch.preserve_format)}
            if group["amsgrad"]:
                state["max_exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            optimizer.state[p] = state

    def drop_unused(opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        handle.remove()
        for group in opt.param_groups:
            for p in group["params"]:
                state = opt.state.get(p)
                if p.grad is None and state and float(state["step"]) == 0.0:
                    del opt.state[p]

    handle = optimizer.register_step_pre_hook(drop_unused)
