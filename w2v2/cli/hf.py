"""`w2v2 export-hf` and `w2v2 import-hf`: checkpoints to and from Hugging Face `transformers` folders."""

from __future__ import annotations

import argparse

from w2v2.interop.hf import export_hf, import_hf


def register(subparsers: argparse._SubParsersAction) -> None:
    export = subparsers.add_parser("export-hf", help="write a checkpoint as a transformers folder (safetensors)")
    export.add_argument("checkpoint", help="fairseq/w2v2 checkpoint: pretrained (wav2vec2) or fine-tuned (wav2vec_ctc)")
    export.add_argument("output_dir", help="folder for config.json, model.safetensors and the processor files")
    export.add_argument("--trust-checkpoint", action="store_true", help="allow a checkpoint with arbitrary pickles")
    export.set_defaults(func=run_export)
    imported = subparsers.add_parser("import-hf", help="write a transformers folder as a fairseq-layout checkpoint")
    imported.add_argument("hf_dir", help="folder with config.json and model.safetensors or pytorch_model.bin")
    imported.add_argument("output", help="checkpoint to write: fairseq's .pt layout, or ours as .safetensors")
    imported.set_defaults(func=run_import)


def run_export(args: argparse.Namespace) -> int:
    print(export_hf(args.checkpoint, args.output_dir, trusted=args.trust_checkpoint).summary())
    return 0


def run_import(args: argparse.Namespace) -> int:
    print(import_hf(args.hf_dir, args.output).summary())
    return 0
