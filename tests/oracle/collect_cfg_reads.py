"""Development tool (our venv): turn the traces of make_oracle_fixtures.sh into cfg_reads.json.

    python tests/oracle/collect_cfg_reads.py WORKDIR tests/fixtures/fairseq/cfg_reads.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from w2v2.fileio import write_text_atomically
from w2v2.interop.safe_load import load_checkpoint_file

RUNS = Path("tests/fixtures/fairseq/training_run")
# scenario -> (what it does, the fairseq-written file whose cfg it reads)
SCENARIOS = {
    "load_pretrain": ("checkpoint_utils.load_model_ensemble_and_task on a pretraining checkpoint",
                      "pretrain_run_last.pt"),
    "load_ctc": ("checkpoint_utils.load_model_ensemble_and_task on a fine-tuned checkpoint", "ctc_run_last.pt"),
    "infer": ("examples/speech_recognition/new/infer.py on a fine-tuned checkpoint", "ctc_run_last.pt"),
    "w2v_path": ("fairseq-hydra-train fine-tuning with a pretraining checkpoint as model.w2v_path",
                 "pretrain_run_last.pt"),
}


def value_at(cfg: dict, path: str) -> Any:
    """The value at a dotted path of `cfg`."""
    node = cfg
    for key in path.split("."):
        node = node[key]
    return node


def main(work: Path, out: Path) -> None:
    """Read WORK/trace_<scenario>.jsonl and write the scenarios' read paths to `out`."""
    scenarios = {}
    for name, (what, checkpoint) in SCENARIOS.items():
        cfg = load_checkpoint_file(RUNS / checkpoint)["cfg"]
        reads = [json.loads(line) for line in (work / f"trace_{name}.jsonl").read_text().splitlines()]
        found = sorted(r["path"] for r in reads if r["found"])
        scenarios[name] = {
            "what": what, "checkpoint": checkpoint, "read": found,
            "read_if_present": sorted(r["path"] for r in reads if not r["found"]),
            "dicts": [p for p in found if isinstance(value_at(cfg, p), dict)],
        }
    data = {"note": ("cfg paths fairseq 0.12.2 reads when it loads its own mid-training checkpoints "
                     "(tests/fixtures/fairseq/training_run), traced by tests/oracle/trace_cfg_reads.py; `read`: "
                     "present in fairseq's file, `read_if_present`: looked up but absent there (fairseq has a "
                     "fallback), `dicts`: read paths where fairseq's file holds a dict (a dataclass group)."),
            "scenarios": scenarios}
    write_text_atomically(out, json.dumps(data, indent=1) + "\n")
    print(out, {name: len(s["read"]) for name, s in scenarios.items()})


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
