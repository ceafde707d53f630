#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Accuracy on eight devices: base_100h fine-tuning from wav2vec_small.pt for 20k updates with
# validation on dev-clean (--data_path=DIR), or the whole demo recipe (2 processes on a CPU).
# See test/README.md.
set -euo pipefail
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
run_case 8 acc 20000 "" "$@"
