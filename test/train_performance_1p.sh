#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Throughput on one device: base_100h fine-tuning from wav2vec_small.pt for 2000 updates without
# validation (--data_path=DIR), or 50 updates of the demo. See test/README.md.
set -euo pipefail
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
run_case 1 perf 2000 50 "$@"
