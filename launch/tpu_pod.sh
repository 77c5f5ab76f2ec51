#!/usr/bin/env bash
# Train on a Cloud TPU VM pod slice: install sg3jax on every worker, check the run with --dry_run, then start
# the same command on every worker (multi-controller JAX: one process per host).
#
#   launch/tpu_pod.sh TPU_NAME ZONE GIT_URL GIT_REF CONFIG[:ARG] WORKDIR [--config.FIELD=VALUE ...]
#   launch/tpu_pod.sh my-v4-32 us-central2-b https://github.com/me/sg3jax.git main \
#       configs/stylegan3_t.py:preset=ffhq1024,data=gs://bucket/ffhq1024 gs://bucket/runs/ffhq
#
# WORKDIR must be visible to every worker under the same name (a gs:// bucket): checkpoints are written by all
# processes together. CONFIG is relative to the checkout. The training runs in the foreground of this ssh
# session: start this script inside tmux/screen, or on a machine that stays up.
# Before anything is installed, the run is planned from this machine (python -m sg3jax.planning.plan: the steps
# compiled for the slice by libtpu, on the CPU) and refused if it does not fit in HBM; run the script from an
# sg3jax checkout whose Python has the `tpu` extra (pip install -e '.[tpu]').
# Environment: SG3JAX_HOME (checkout on the workers, default ~/sg3jax), SG3JAX_VENV (default ~/sg3jax-venv),
# GCLOUD_FLAGS (extra flags for gcloud, e.g. "--project=my-project"), PLAN_PYTHON (the planning interpreter here,
# default python), SG3JAX_TOPOLOGY (the slice as GENERATION:SHAPE, e.g. v5e:4x4; default: asked from gcloud),
# SG3JAX_FIT (batch|bf16|remat: if the run does not fit, train with the plan's remedy instead of refusing).
set -euo pipefail

usage() {
  echo "usage: $0 TPU_NAME ZONE GIT_URL GIT_REF CONFIG[:ARG] WORKDIR [--config.FIELD=VALUE ...]" >&2
  exit 2
}
[[ $# -ge 6 ]] || usage
tpu_name=$1
zone=$2
git_url=$3
git_ref=$4
config=$5
workdir=$6
shift 6

# Expanded by the workers' shell (so $HOME is theirs); paths without spaces.
# shellcheck disable=SC2016
home_dir=${SG3JAX_HOME:-'$HOME/sg3jax'}
# shellcheck disable=SC2016
venv_dir=${SG3JAX_VENV:-'$HOME/sg3jax-venv'}
read -r -a gcloud_flags <<< "${GCLOUD_FLAGS:-}"

# Run a command on the given worker(s) of the slice; fails if it fails on any of them.
on_workers() {
  local workers=$1 command=$2
  gcloud compute tpus tpu-vm ssh "$tpu_name" --zone "$zone" --worker="$workers" "${gcloud_flags[@]}" \
    --command "$command"
}

# The train command for the workers' shell, each argument quoted once. SG3JAX_DISTRIBUTED=1 makes the trainer
# call jax.distributed.initialize(), whose arguments JAX detects on Cloud TPU by itself.
train_cmd="cd $home_dir && SG3JAX_DISTRIBUTED=1 $venv_dir/bin/python $(printf '%q ' -m sg3jax.train \
  --config "$config" --workdir "$workdir" "$@")"

# The slice's topology for the plan: GENERATION:SHAPE from the TPU's acceleratorConfig (type V5LITE_POD and
# topology 4x4 -> v5e:4x4), unless SG3JAX_TOPOLOGY gives it.
topology=${SG3JAX_TOPOLOGY:-}
if [[ -z $topology ]]; then
  read -r acc_type acc_shape < <(gcloud compute tpus tpu-vm describe "$tpu_name" --zone "$zone" \
    "${gcloud_flags[@]}" --format='value(acceleratorConfig.type,acceleratorConfig.topology)' | tr ';' ' ')
  case "${acc_type:-}" in
    V4) generation=v4 ;;
    V5LITE_POD|V5E) generation=v5e ;;
    V5P) generation=v5p ;;
    V6E) generation=v6e ;;
    *) echo "Cannot tell the topology of $tpu_name (acceleratorConfig.type '${acc_type:-}'): set" \
         "SG3JAX_TOPOLOGY=GENERATION:SHAPE, e.g. v5e:4x4" >&2; exit 2 ;;
  esac
  topology="$generation:$acc_shape"
fi

# Compile the training steps for the slice here, on the CPU, and refuse a run that does not fit (exit status 3
# from the plan); with SG3JAX_FIT the plan's remedy (a smaller batch, bf16 top layers, or remat) is added to the run.
echo "== Plan for $topology (compiled here, on the CPU)"
plan_overrides=$(mktemp)
trap 'rm -f "$plan_overrides"' EXIT
plan_args=(--config "$config" --topology "$topology" --overrides_out "$plan_overrides" "$@")
[[ -n ${SG3JAX_FIT:-} ]] && plan_args+=(--fit "$SG3JAX_FIT")
if ! (cd "$(dirname "$0")/.." && "${PLAN_PYTHON:-python}" -m sg3jax.planning.plan "${plan_args[@]}"); then
  echo "The plan failed or the run does not fit on $topology: not starting it (see above for what would fit;" \
       "SG3JAX_FIT=batch|bf16|remat applies a remedy)." >&2
  exit 1
fi
mapfile -t fit_flags < "$plan_overrides"
if [[ ${#fit_flags[@]} -gt 0 ]]; then
  echo "== Training with the plan's remedy: ${fit_flags[*]}"
  train_cmd="$train_cmd $(printf '%q ' "${fit_flags[@]}")"
fi

echo "== Installing $git_url@$git_ref on all workers of $tpu_name"
on_workers all "set -euo pipefail
  rm -rf $home_dir
  git clone --quiet --depth 1 --branch $(printf '%q' "$git_ref") $(printf '%q' "$git_url") $home_dir
  python3 -m venv $venv_dir
  $venv_dir/bin/pip install --quiet --upgrade pip
  $venv_dir/bin/pip install --quiet -e $home_dir 'jax[tpu]'"

# The dry run goes to every worker, not only worker 0: on a multi-host slice no process can reach the TPUs
# alone, and the batch checks need the global device count; it prints the resolved config on process 0.
echo "== Dry run (config, device count, batch divisibility)"
if ! on_workers all "$train_cmd --dry_run"; then
  echo "Dry run failed: not starting the training." >&2
  exit 1
fi

echo "== Training"
on_workers all "$train_cmd"
