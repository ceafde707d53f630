#!/usr/bin/env bash
# Development tool, never run by CI: write one checkpoint of every kind we write (micro model, tests'
# noise corpus), have fairseq (the oracle, ../shared/oracle/README.md) load each and compute its
# outputs, run fairseq's infer.py on the fine-tuned one, and trace which cfg paths fairseq reads at
# load time on fairseq's own mid-training files. Writes tests/fixtures/ours/ and
# tests/fixtures/fairseq/cfg_reads.json; run from the repository root:
#   bash tests/oracle/make_oracle_fixtures.sh [WORKDIR]
set -euo pipefail
WORK=${1:-/tmp/w2v2-oracle-fixtures}
PY=${W2V2_PYTHON:-/work/main/.venv/bin/python}
FS=${FAIRSEQ_ORACLE:-/tmp/fairseq-oracle}
ORACLE=${ORACLE_DIR:-../shared/oracle}
OUT=tests/fixtures/ours
CONFIGS=tests/fixtures/fairseq/configs
RUNS=tests/fixtures/fairseq/training_run
ROOT=$PWD
export PYTHONPATH=$ROOT
rm -rf "$WORK" && mkdir -p "$WORK" "$OUT"
$PY -c "from pathlib import Path; from tests.corpus import write_corpus; write_corpus(Path('$WORK/corpus'))" 2>/dev/null
DATA=$WORK/corpus/manifest
# A model of ~11k parameters, so that a checkpoint with its Adam state is ~150 KB.
MICRO=(model.encoder_embed_dim=16 model.encoder_ffn_embed_dim=32 model.encoder_attention_heads=2
  model.encoder_layers=1 model.final_dim=8 model.latent_vars=8 model.conv_pos=8 model.conv_pos_groups=2
  "model.conv_feature_layers='[(16,10,5)]+[(16,3,2)]*4+[(16,2,2)]*2'")
CTC=(model.mask_channel_length=4 dataset.validate_interval_updates=2 checkpoint.save_interval_updates=2
  checkpoint.keep_interval_updates=1)
train() { $PY -m w2v2.cli.hydra_train --config-dir $CONFIGS "$@" task.data=$DATA dataset.num_workers=0 >$WORK/log 2>&1 \
  || { tail -3 $WORK/log; return 1; }; }

train --config-name tiny_pretrain "${MICRO[@]}" hydra.run.dir=$WORK/pt optimization.max_update=4 \
  checkpoint.save_interval_updates=2 checkpoint.keep_interval_updates=-1
cp $WORK/pt/checkpoints/checkpoint_last.pt $OUT/pretrain_last.pt
cp $WORK/pt/checkpoints/checkpoint_1_2.pt $OUT/pretrain_interval.pt
train --config-name tiny_ctc "${CTC[@]}" hydra.run.dir=$WORK/ft model.w2v_path=$OUT/pretrain_last.pt optimization.max_update=4
cp $WORK/ft/checkpoints/checkpoint_best.pt $OUT/ctc_best.pt
# resumed: the same run continued for two more updates from its checkpoint_last.pt
train --config-name tiny_ctc "${CTC[@]}" hydra.run.dir=$WORK/ft model.w2v_path=$OUT/pretrain_last.pt optimization.max_update=6
cp $WORK/ft/checkpoints/checkpoint_last.pt $OUT/ctc_resumed_last.pt
$PY tests/oracle/train_fp16_on_cpu.py --config-dir $CONFIGS --config-name tiny_ctc "${CTC[@]}" task.data=$DATA \
  dataset.num_workers=0 hydra.run.dir=$WORK/ft16 model.w2v_path=$OUT/pretrain_last.pt optimization.max_update=2 \
  common.fp16=true >$WORK/log 2>&1 || { tail -3 $WORK/log; exit 1; }
cp $WORK/ft16/checkpoints/checkpoint_last.pt $OUT/ctc_fp16_last.pt
# fine-tuned from fairseq's pre-2021 (`args`) pretrained model; no Adam state, to stay small
train --config-name tiny_ctc hydra.run.dir=$WORK/ft_args model.w2v_path=tests/fixtures/fairseq/args_era_pretrain.pt \
  optimization.max_update=2 checkpoint.no_save_optimizer_state=true
cp $WORK/ft_args/checkpoints/checkpoint_last.pt $OUT/ctc_from_args_era_last.pt
$PY - "$OUT" "$DATA" <<'EOF'
import sys, torch, w2v2
from w2v2.data.dictionary import Dictionary
from w2v2.models.config import Wav2Vec2CtcConfig
from w2v2.models.ctc import Wav2Vec2Ctc
out, data = sys.argv[1:3]
torch.manual_seed(0)
pretrained = w2v2.load_model(f"{out}/pretrain_last.pt")
w2v2.save_checkpoint(f"{out}/saved_pretrain.pt", pretrained, num_updates=4)
dictionary = Dictionary.load(f"{data}/dict.ltr.txt")
bare = Wav2Vec2Ctc(Wav2Vec2CtcConfig(), pretrained.cfg, len(dictionary))
w2v2.save_checkpoint(f"{out}/saved_ctc_bare.pt", bare, dictionary=dictionary, num_updates=10)
EOF

# fairseq loads each of them; its outputs on a fixed 0.25 s input go into one file
mkdir -p $WORK/outputs
for ckpt in $OUT/*.pt; do
  name=$(basename $ckpt .pt)
  [ "$name" = fairseq_outputs ] && continue
  $FS/python $ORACLE/fairseq_outputs.py $ckpt $WORK/outputs/$name.pt --data $DATA --seconds 0.25 2>&1 | grep '^fairseq'
done
$PY - $WORK/outputs $OUT/fairseq_outputs.pt <<'EOF'
import sys, torch
from pathlib import Path
from w2v2.fileio import atomic_write
files = sorted(Path(sys.argv[1]).glob("*.pt"))
runs = {f.stem: torch.load(f, weights_only=True) for f in files}
first = runs[files[0].stem]
assert all(torch.equal(r["source"], first["source"]) for r in runs.values())
result = {"source": first["source"], "padding_mask": first["padding_mask"],
          "outputs": {n: {"kind": r["kind"], "value": r["lprobs" if r["kind"] == "ctc" else "x"]} for n, r in runs.items()}}
with atomic_write(Path(sys.argv[2]), "wb") as handle:
    torch.save(result, handle)
print("fairseq outputs of", ", ".join(runs), "->", sys.argv[2])
EOF

# fairseq's infer.py (greedy) on the fine-tuned checkpoint and the tests' noise corpus
(cd $FS/src && $FS/python examples/speech_recognition/new/infer.py --config-dir examples/speech_recognition/new/conf \
  --config-name infer +task._name=audio_finetuning +task.data=$DATA +task.labels=ltr decoding.type=viterbi \
  dataset.gen_subset=valid common_eval.path=$ROOT/$OUT/ctc_resumed_last.pt common.cpu=true common.user_dir=null \
  dataset.required_batch_size_multiple=1 dataset.max_tokens=1000000 hydra.run.dir=$WORK/infer \
  decoding.results_path=$WORK/infer 2>&1 | grep 'Word error rate')
$PY - $WORK/infer $OUT/infer_valid.json <<'EOF'
import json, re, sys
from pathlib import Path
from w2v2.fileio import write_text_atomically
folder = Path(sys.argv[1])
def lines(name):
    return dict(reversed(re.match(r"(.*) \((.*)\)$", line).groups()) for line in (folder / name).read_text().splitlines())
errors, words = map(int, re.search(r"err / num_ref_words = (\d+) / (\d+)", (folder / "wer").read_text()).groups())
result = {"checkpoint": "ctc_resumed_last.pt", "subset": "valid", "max_tokens": 1000000, "word_errors": errors,
          "words": words, "hypo_units": lines("hypo.units"), "hypo_words": lines("hypo.word")}
write_text_atomically(Path(sys.argv[2]), json.dumps(result, indent=1) + "\n")
print(f"infer.py: {errors}/{words} word errors -> {sys.argv[2]}")
EOF

# which cfg paths fairseq reads when it loads its own mid-training files (and one as model.w2v_path)
rm -f $WORK/trace_*.jsonl
$FS/python tests/oracle/trace_cfg_reads.py $WORK/trace_load_pretrain.jsonl $ORACLE/fairseq_outputs.py \
  $RUNS/pretrain_run_last.pt $WORK/x.pt 2>&1 | grep '^fairseq'
$FS/python tests/oracle/trace_cfg_reads.py $WORK/trace_load_ctc.jsonl $ORACLE/fairseq_outputs.py \
  $RUNS/ctc_run_last.pt $WORK/x.pt --data $DATA 2>&1 | grep '^fairseq'
(cd $FS/src && $FS/python $ROOT/tests/oracle/trace_cfg_reads.py $WORK/trace_infer.jsonl \
  examples/speech_recognition/new/infer.py --config-dir examples/speech_recognition/new/conf --config-name infer \
  +task._name=audio_finetuning +task.data=$DATA +task.labels=ltr decoding.type=viterbi dataset.gen_subset=valid \
  common_eval.path=$ROOT/$RUNS/ctc_run_last.pt common.cpu=true common.user_dir=null \
  dataset.required_batch_size_multiple=1 dataset.max_tokens=1000000 hydra.run.dir=$WORK/infer_fs 2>&1 | grep 'Word error rate')
(cd $FS/src && $FS/python $ROOT/tests/oracle/trace_cfg_reads.py $WORK/trace_w2v_path.jsonl fairseq_cli/hydra_train.py \
  --config-dir $ROOT/$CONFIGS --config-name tiny_ctc task.data=$DATA model.w2v_path=$ROOT/$RUNS/pretrain_run_last.pt \
  optimization.max_update=2 hydra.run.dir=$WORK/fs_ft checkpoint.save_dir=$WORK/fs_ft/ckpt 2>&1 | grep 'done training')
$PY tests/oracle/collect_cfg_reads.py $WORK tests/fixtures/fairseq/cfg_reads.json
ls -l $OUT
