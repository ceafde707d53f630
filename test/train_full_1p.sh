#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Accuracy on one device: base_100h fine-tuning from wav2vec_small.pt for 160k updates with
# validation on dev-clean (--data_path=DIR), or the whole demo recipe. See test/README.md.
set -euo pipefail
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
run_case 1 acc 160000 "" "$@"
