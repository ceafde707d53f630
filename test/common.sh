# shellcheck shell=bash
# Shared part of test/train_{full,performance}_{1p,8p}.sh; sourced by them, not run.
#
# The four scripts take the arguments of the Ascend fairseq fork's launch scripts. With
# --data_path they fine-tune wav2vec_small.pt with base_100h on LibriSpeech train-clean-100; without
# it they run the bundled demo (a small model pretrained on examples/demo_corpus, then CTC
# fine-tuned). Each prints and writes the summary the fork's parsers read (see test/README.md).

TEST_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(dirname "$TEST_DIR")
SCRIPT_NAME=$(basename "$0")
MANIFEST_FILES=(train.tsv train.ltr valid.tsv valid.ltr dict.ltr.txt)
PERF_PRETRAIN_UPDATES=5  # the demo pretraining a performance run makes when no full one exists

usage() {
  cat <<EOF
usage: test/$SCRIPT_NAME [--data_path=DIR] [--device_id=N] [--device=cpu|cuda|npu] [--fp32 | --hf32]
       [--pretrain_updates=N] [KEY=VALUE ...]

  --data_path=DIR       LibriSpeech folder with train-clean-100/, dev-clean/ and wav2vec_small.pt;
                        DIR/manifest/ is prepared if missing. Without it: the bundled demo corpus.
  --device_id=N         output folder test/output/N/; on one device, also the device used (default 0)
  --device=KIND         cpu, cuda or npu (default: the best available)
  --fp32 / --hf32       TF32/HF32 off; --hf32: HF32 convolutions on NPU (matmuls left alone, as in
                        the Ascend fork), TF32 matmuls and convolutions on CUDA
  --pretrain_updates=N  demo only: pretrain the demo model for N updates (default: the demo_pretrain
                        recipe's; 5 for performance runs when no full pretraining exists yet)
  KEY=VALUE             Hydra overrides passed on to fine-tuning, after the script's own
EOF
}

die() {
  echo "$SCRIPT_NAME: error: $*" >&2
  exit 2
}

# parse_args ARGS...: sets DATA_PATH, DEVICE_ID, DEVICE, PRECISION, PRETRAIN_UPDATES and OVERRIDES.
parse_args() {
  DATA_PATH="" DEVICE_ID=0 DEVICE=auto PRECISION="" PRETRAIN_UPDATES=""
  OVERRIDES=()
  local arg fp32=0 hf32=0
  while (($#)); do
    arg=$1
    shift
    if [[ $arg =~ ^--(data_path|device_id|device|pretrain_updates)$ ]]; then
      (($#)) || die "$arg needs a value: $arg=VALUE."
      arg="$arg=$1"
      shift
    fi
    case $arg in
      --data_path=*) DATA_PATH=${arg#*=} ;;
      --device_id=*) DEVICE_ID=${arg#*=} ;;
      --device=*) DEVICE=${arg#*=} ;;
      --pretrain_updates=*) PRETRAIN_UPDATES=${arg#*=} ;;
      --fp32) fp32=1 ;;
      --hf32) hf32=1 ;;
      -h | --help) usage; exit 0 ;;
      -*) die "unknown argument '$arg'. Arguments: --data_path=DIR, --device_id=N, --device=cpu|cuda|npu," \
        "--fp32, --hf32, --pretrain_updates=N, and Hydra overrides KEY=VALUE (see --help)." ;;
      *=* | '~'*) OVERRIDES+=("$arg") ;;
      *) die "unexpected argument '$arg': give options as --name=VALUE and Hydra overrides as KEY=VALUE" \
        "(see --help)." ;;
    esac
  done
  ((fp32 + hf32 < 2)) || die "--fp32 and --hf32 exclude each other (--fp32 turns HF32/TF32 off, --hf32" \
    "turns it on); give one of them at most."
  if ((fp32)); then PRECISION=fp32; fi
  if ((hf32)); then PRECISION=hf32; fi
  [[ $DEVICE_ID =~ ^[0-9]+$ ]] || die "--device_id must be a device number such as 0, but is '$DEVICE_ID' instead."
  [[ $DEVICE =~ ^(auto|cpu|cuda|npu)$ ]] || die "--device must be cpu, cuda or npu, but is '$DEVICE' instead."
  [[ -z $PRETRAIN_UPDATES || $PRETRAIN_UPDATES =~ ^[1-9][0-9]*$ ]] \
    || die "--pretrain_updates must be a positive number of updates, but is '$PRETRAIN_UPDATES' instead."
  [[ -z $PRETRAIN_UPDATES || -z $DATA_PATH ]] \
    || die "--pretrain_updates applies to the demo only; with --data_path the pretrained model is DIR/wav2vec_small.pt."
}

# find_python: PYTHON as given, else the repository's .venv, else python3; it must import w2v2.
# Sets BEST_KIND to the best device kind that interpreter finds.
find_python() {
  if [[ -z ${PYTHON:-} ]]; then
    PYTHON=python3
    if [[ -x $REPO_ROOT/.venv/bin/python ]]; then PYTHON=$REPO_ROOT/.venv/bin/python; fi
  fi
  BEST_KIND=$("$PYTHON" -c "from w2v2.devices import best_kind; print(best_kind())" 2>/dev/null) \
    || die "'$PYTHON' cannot import w2v2: run 'make install' in $REPO_ROOT, or set PYTHON to an" \
      "interpreter where w2v2 is installed."
}

# pick_device RANKS: sets KIND (cpu, cuda or npu) and exports what training reads; on one device,
# only --device_id is made visible.
pick_device() {
  KIND=$DEVICE
  if [[ $KIND == auto ]]; then
    KIND=$BEST_KIND
    echo "device: $KIND (the best available; choose with --device)"
  fi
  export W2V2_DEVICE=$KIND
  if [[ -n $PRECISION ]]; then
    export W2V2_MATMUL_PRECISION=$PRECISION
    if [[ $KIND == cpu ]]; then echo "note: --$PRECISION has no effect on the CPU"; fi
  fi
  if [[ $KIND == npu ]]; then
    # What Ascend's launch scripts (test/env_npu.sh) set: the asynchronous operator queue, no HCCL trust list.
    export TASK_QUEUE_ENABLE=${TASK_QUEUE_ENABLE:-1} HCCL_WHITELIST_DISABLE=${HCCL_WHITELIST_DISABLE:-1}
    local cann=/usr/local/Ascend/ascend-toolkit/set_env.sh
    if [[ -z ${ASCEND_TOOLKIT_HOME:-} && -f $cann ]]; then
      # shellcheck source=/dev/null
      source "$cann"
    fi
  fi
  if (($1 == 1)); then
    case $KIND in
      cuda) export CUDA_VISIBLE_DEVICES=$DEVICE_ID ;;
      npu) export ASCEND_RT_VISIBLE_DEVICES=$DEVICE_ID ;;
    esac
  fi
}

# prepare_manifest CORPUS DEST: fairseq's fine-tuning files of CORPUS in DEST, unless all are there.
prepare_manifest() {
  local name missing=0
  for name in "${MANIFEST_FILES[@]}"; do
    [[ -f $2/$name ]] || missing=1
  done
  ((missing)) || return 0
  for name in train-clean-100 dev-clean; do
    [[ -d $1/$name ]] || die "$1 has no $name/ folder, and $2 lacks the manifest made from it; the data" \
      "must be in LibriSpeech's layout ($1/$name/SPEAKER/CHAPTER/*.flac)."
  done
  echo "preparing $2 from $1"
  "$PYTHON" -m w2v2.cli.main prepare librispeech --data-path "$1" --dest "$2" || die "could not prepare $2 (see above)."
}

# hydra_train LOG ARGS...: fairseq-hydra-train ARGS, its output shown and kept in LOG.
hydra_train() {
  local log=$1
  shift
  echo "+ fairseq-hydra-train $*"
  "$PYTHON" -m w2v2.cli.hydra_train "$@" 2>&1 | tee "$log" || die "training failed; its output is in $log."
}

# pretrain_demo MANIFEST MODE: sets W2V_PATH to a demo model pretrained with demo_pretrain, made if
# missing. Accuracy runs use the recipe's full pretraining (test/output/demo_pretrain/recipe/);
# performance runs use it too when it exists, else a short one, since throughput does not depend
# on the weights. --pretrain_updates=N picks test/output/demo_pretrain/updates_N/.
pretrain_demo() {
  local root=$TEST_DIR/output/demo_pretrain name=recipe updates=""
  if [[ -n $PRETRAIN_UPDATES ]]; then
    updates=$PRETRAIN_UPDATES
  elif [[ $2 == perf && ! -f $root/recipe/checkpoints/checkpoint_last.pt ]]; then
    updates=$PERF_PRETRAIN_UPDATES
  fi
  if [[ -n $updates ]]; then name=updates_$updates; fi
  local dir=$root/$name
  W2V_PATH=$dir/checkpoints/checkpoint_last.pt
  if [[ -f $W2V_PATH ]]; then
    echo "using the demo's pretrained model $W2V_PATH (delete $dir to pretrain again)"
    return 0
  fi
  local tmp=$dir.tmp.$$
  local args=(--config-name demo_pretrain "task.data=$1" "hydra.run.dir=$tmp")
  if [[ -n $updates ]]; then args+=("optimization.max_update=$updates"); fi
  echo "pretraining the demo model ($name) into $dir; later runs reuse it"
  rm -rf "$tmp"
  mkdir -p "$tmp"
  hydra_train "$tmp/console.log" "${args[@]}"
  # Renamed only when complete, so an interrupted run is never taken for a pretrained model.
  if [[ -e $dir ]]; then rm -rf "$tmp"; else mv "$tmp" "$dir"; fi
}

# base_100h_args UPDATES: sets ARGS and BATCH to fine-tune DATA_PATH/wav2vec_small.pt with base_100h.
base_100h_args() {
  [[ -f $DATA_PATH/wav2vec_small.pt ]] \
    || die "$DATA_PATH/wav2vec_small.pt is missing: put fairseq's BASE model (pretrained on LibriSpeech 960 h) there."
  prepare_manifest "$DATA_PATH" "$DATA_PATH/manifest"
  BATCH=8
  ARGS=(--config-name base_100h "task.data=$DATA_PATH/manifest" "model.w2v_path=$DATA_PATH/wav2vec_small.pt"
    "dataset.batch_size=$BATCH" dataset.valid_subset=valid "optimization.max_update=$1")
  if [[ $KIND == cpu ]]; then
    ARGS+=(common.fp16=false)
    echo "note: base_100h's fp16 is turned off on the CPU (common.fp16=false)"
  fi
}

# demo_args MODE UPDATES: sets ARGS to fine-tune a pretrained demo model with demo_ctc (UPDATES
# updates, "" = the recipe's), WORLD to 2 for an 8-process case on the CPU.
demo_args() {
  local corpus=$REPO_ROOT/examples/demo_corpus manifest=$TEST_DIR/output/demo_data/manifest
  [[ -d $corpus/train-clean-100 ]] \
    || die "the bundled corpus $corpus/train-clean-100 is missing: regenerate it with" \
      "'python examples/demo_corpus/generate.py --out examples/demo_corpus', or pass --data_path=DIR."
  prepare_manifest "$corpus" "$manifest"
  pretrain_demo "$manifest" "$1"
  if ((WORLD > 2)) && [[ $KIND == cpu ]]; then
    echo "note: the demo's '${WORLD}p' case runs 2 processes on the CPU, not $WORLD (too heavy for a CPU)"
    WORLD=2
  fi
  ARGS=(--config-name demo_ctc "task.data=$manifest" "model.w2v_path=$W2V_PATH")
  if [[ -n $2 ]]; then ARGS+=("optimization.max_update=$2"); fi
}

# run_case RANKS MODE UPDATES DEMO_UPDATES ARGS...: the whole launch script. MODE is perf or acc;
# UPDATES is base_100h's max_update, DEMO_UPDATES demo_ctc's ("" = the recipe's).
run_case() {
  local mode=$2 network=wav2vec2
  WORLD=$1 BATCH=""
  parse_args "${@:5}"
  if [[ -n $DATA_PATH ]]; then
    [[ -d $DATA_PATH ]] || die "--data_path: '$DATA_PATH' is not a folder."
    DATA_PATH=$(cd "$DATA_PATH" && pwd)
  fi
  cd "$REPO_ROOT" || die "cannot enter $REPO_ROOT."
  find_python
  pick_device "$WORLD"
  if [[ -n $DATA_PATH ]]; then
    base_100h_args "$3"
  else
    demo_args "$mode" "$4"
    network=wav2vec2_demo
  fi
  if [[ $mode == perf ]]; then ARGS+=(dataset.disable_validation=true checkpoint.no_save=true); fi
  local out=$TEST_DIR/output/$DEVICE_ID
  rm -rf "$out"
  mkdir -p "$out"
  ARGS+=("distributed_training.distributed_world_size=$WORLD" "hydra.run.dir=$out" ${OVERRIDES[@]+"${OVERRIDES[@]}"})
  local log=$out/train_$DEVICE_ID.log start
  start=$(date +%s)
  hydra_train "$log" "${ARGS[@]}"
  "$PYTHON" -m w2v2.cli.launch_summary "$log" --network "$network" --rank-size "$WORLD" --mode "$mode" \
    ${BATCH:+--batch-size "$BATCH"} --device "$KIND" --e2e-seconds $(($(date +%s) - start)) \
    || die "no summary: the training log $log lacks the records it needs."
}
