"""Development tool: `fairseq-hydra-train` of ours with `common.fp16=true` on a machine without a GPU.

w2v2.devices refuses fp16 on the CPU (its autocast there is slow and partial); to write the
checkpoint an fp16 run writes (cfg `common.fp16: true`, the loss scaler's state), this allows float16
autocast with loss scaling on the CPU for this process only.

    python tests/oracle/train_fp16_on_cpu.py --config-dir DIR --config-name NAME common.fp16=true ...
"""

from __future__ import annotations

import sys

import torch

from w2v2 import devices
from w2v2.cli.hydra_train import main

_precision = devices.precision


def precision_allowing_cpu_fp16(device: torch.device, fp16: bool = False,
                                bf16: bool = False) -> devices.Precision:
    """devices.precision, except that fp16 on the CPU gives float16 autocast with loss scaling."""
    if fp16 and device.type == "cpu":
        return devices.Precision(torch.float16, loss_scaling=True)
    return _precision(device, fp16, bf16)


if __name__ == "__main__":
    devices.precision = precision_allowing_cpu_fp16
    sys.exit(main(sys.argv[1:]))
