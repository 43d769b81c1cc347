#!/usr/bin/env bash
# Replays a Canopy workload file through Automerge and Yjs; prints one JSON line per library.
#   bench/reference/run.sh WORKLOAD_FILE [reference.mjs options]
# Make a workload with: canopy_workload_gen --seed 1 --initial 1000 --changes 20000 --out FILE
set -euo pipefail
if [[ $# -lt 1 ]]; then
  echo "usage: $0 WORKLOAD_FILE [--limit N|all] [--automerge-limit N|all] [--yjs-limit N|all]" \
    "[--only automerge|yjs] [--repeat N]" >&2
  exit 2
fi
file=$(realpath "$1")
shift
cd "$(dirname "${BASH_SOURCE[0]}")"
if [[ ! -d node_modules ]]; then
  npm ci --silent >&2
fi
exec node reference.mjs "$file" "$@"
