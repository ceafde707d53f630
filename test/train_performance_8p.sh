#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Throughput on eight devices: base_100h fine-tuning from wav2vec_small.pt for 800 updates without
# validation (--data_path=DIR), or 20 updates of the demo (2 processes on a CPU). See test/README.md.
set -euo pipefail
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
run_case 8 perf 800 20 "$@"
