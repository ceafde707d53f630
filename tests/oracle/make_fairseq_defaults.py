"""Development tool, run with the fairseq oracle's python (../shared/oracle/README.md), never by CI:
write fairseq's default value of every field of every config group that fairseq stores in a
checkpoint's `cfg` as a dataclass, to w2v2/interop/fairseq_defaults.json.

    /tmp/fairseq-oracle/python tests/oracle/make_fairseq_defaults.py w2v2/interop/fairseq_defaults.json

Interpolations (`${common.fp16}`) and required fields (`???`) are kept as fairseq writes them.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import fairseq
from fairseq.criterions import CRITERION_DATACLASS_REGISTRY
from fairseq.dataclass.configs import FairseqConfig
from fairseq.models import MODEL_DATACLASS_REGISTRY
from fairseq.optim import OPTIMIZER_DATACLASS_REGISTRY
from fairseq.optim.lr_scheduler import LR_SCHEDULER_DATACLASS_REGISTRY
from fairseq.tasks import TASK_DATACLASS_REGISTRY
from omegaconf import OmegaConf

# The named groups this toolkit writes, by `_name`.
NAMED = {
    "task": (TASK_DATACLASS_REGISTRY, ("audio_pretraining", "audio_finetuning")),
    "criterion": (CRITERION_DATACLASS_REGISTRY, ("wav2vec", "ctc")),
    "optimizer": (OPTIMIZER_DATACLASS_REGISTRY, ("adam",)),
    "lr_scheduler": (LR_SCHEDULER_DATACLASS_REGISTRY, ("polynomial_decay", "tri_stage", "fixed")),
    "model": (MODEL_DATACLASS_REGISTRY, ("wav2vec2", "wav2vec_ctc")),
}


def plain(instance: object) -> dict:
    """The dataclass instance as nested plain values, interpolations unresolved."""
    return OmegaConf.to_container(OmegaConf.structured(instance), resolve=False, enum_to_str=True)


def main(out: Path) -> None:
    """Write the defaults table to `out`."""
    top = plain(FairseqConfig())
    groups = {k: v for k, v in top.items() if isinstance(v, dict)}
    untyped = sorted(k for k, v in top.items() if v is None and k != "_name")
    named = {group: {name: {**plain(registry[name]()), "_name": name} for name in names}
             for group, (registry, names) in NAMED.items()}
    src = Path(fairseq.__file__).parents[1]
    commit = subprocess.run(["git", "-C", str(src), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip() or "3d262bb"
    data = {
        "note": (f"fairseq {fairseq.__version__} ({commit}) defaults of the config groups it stores in a "
                 "checkpoint's cfg as dataclasses, made by tests/oracle/make_fairseq_defaults.py on a machine "
                 "without GPUs (distributed_world_size etc. default to the visible GPU count, here 1). "
                 "'${a.b}' strings are fairseq's interpolations, '???' marks a field fairseq requires."),
        "groups": groups,
        "untyped_groups": untyped,
        "named_groups": named,
    }
    out.write_text(json.dumps(data, indent=1, sort_keys=False) + "\n")
    print(f"wrote {out}: {len(groups)} typed groups, " +
          ", ".join(f"{g}: {sorted(v)}" for g, v in named.items()))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
