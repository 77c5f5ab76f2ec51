#!/usr/bin/env bash
# Train on this machine: one process driving all of its local accelerators (or the CPU).
#
#   launch/local.sh CONFIG[:ARG] WORKDIR [--config.FIELD=VALUE ...] [--dry_run]
#   launch/local.sh configs/stylegan3_t.py:preset=ffhq1024,data=/data/ffhq /runs/ffhq --config.batch_size=16
#
# The Python interpreter is $PYTHON (default: python). Re-running with the same WORKDIR resumes.
set -euo pipefail

usage() {
  echo "usage: $0 CONFIG[:ARG] WORKDIR [--config.FIELD=VALUE ...] [--dry_run]" >&2
  echo "  e.g. $0 configs/stylegan3_t.py:tiny /tmp/sg3jax-tiny" >&2
  exit 2
}
[[ $# -ge 2 ]] || usage
config=$1
workdir=$2
shift 2

# Single host: no jax.distributed.initialize() (it would fail without a cluster to join).
exec env -u SG3JAX_DISTRIBUTED "${PYTHON:-python}" -m sg3jax.train --config "$config" --workdir "$workdir" "$@"
