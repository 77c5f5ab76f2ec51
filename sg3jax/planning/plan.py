r"""Plan a training run for a TPU slice from a CPU host: compile the real update steps for the slice, check that
they fit in HBM, and estimate the speed, before anyone pays for the pod.

    python -m sg3jax.planning.plan --config configs/stylegan3_t.py:preset=ffhq1024 --topology v5e:2x4 \
        [--config.batch_size=64 ...] [--fit=batch|bf16|remat] [--overrides_out FILE]

How (MaxText's train_compile.py idea, STYLE.md section 5.14): with Google's libtpu installed (`pip install
'sg3jax[tpu]'`), `jax.experimental.topologies.get_topology_desc('v5e:2x4')` describes the slice's devices without
any TPU attached. The training state is built abstractly with `jax.eval_shape` (nothing is allocated), the
trainer's own jitted phases (`sg3jax.training.steps.make_steps`) are lowered on a `data` mesh over those devices
for the config's global batch, and compiled by the TPU compiler. Its `memory_analysis()` gives each device's
argument, output, temporary and code bytes, and `cost_analysis()` the FLOPs and HBM bytes of one step.

What it prints, per phase and per chip: memory against the chip's HBM (chips.py), FLOPs and bytes per step, and
a roofline time max(FLOPs / peak, bytes / bandwidth); from the phases' times and how often each runs (Gmain,
Dmain and the EMA every minibatch, Greg and Dreg every G/D_reg_interval) an estimated sec/kimg, beside the
official V100/A100 figure for the same config where docs/configs.md lists one. The estimate is a lower bound: it
ignores the gradient all-reduce, input feeding, and everything the roofline cannot see (fusion quality, MXU
padding of small channel counts). The compiler's own estimate (`optimal_seconds` of the TPU cost model) is
printed too.

When the run does not fit it says so with the numbers and what would fit: the largest per-chip batch, the top
`num_fp16_res` resolutions in bfloat16 (`config.precision`), or rematerialisation (`config.remat`: each layer
recomputed in the backward pass); `--fit=batch|bf16|remat` applies one and prints (and writes to
--overrides_out) the `--config.FIELD=VALUE` flags that make the run fit. The exit status is 0 when the (possibly
fitted) run fits, 3 when it does not, so launch/ scripts refuse to start such a job.

`--topology=local` plans on the devices JAX sees instead (a GPU node under SLURM, or a TPU VM), against each
device's reported memory limit.

jax, absl and everything that imports jax are imported inside the functions here: `__main__` first chooses
JAX_PLATFORMS (cpu for a TPU topology: libtpu serves as a compiler only), which jax reads when first imported.
"""

import dataclasses
import importlib.util
import json
import os
import re
import sys
import time
from typing import Callable, Dict, List, Optional, Sequence

from sg3jax import utils
from sg3jax.planning import chips as chips_lib

EXIT_DOES_NOT_FIT = 3
DEFAULT_HBM_FRACTION = 0.95   # of HBM usable by the program: our margin for the runtime's own buffers

# Official raw training speed (s/kimg on V100 and A100, GPU count, global batch) from NVlabs/stylegan3
# docs/configs.md: the "Recommended configurations" tables (StyleGAN3-T/R, batch 32, default cbase) and, for
# StyleGAN2, the repro configurations (`stylegan2` = 1024 px, paper256, paper512). Keyed by
# (cfg, resolution, gpus, batch, cbase).
OFFICIAL_SEC_PER_KIMG = {
    ('stylegan3-t', 128, 1, 32, 32768): (73.68, 27.20), ('stylegan3-t', 128, 2, 32, 32768): (37.30, 13.74),
    ('stylegan3-t', 128, 4, 32, 32768): (20.66, 7.52), ('stylegan3-t', 128, 8, 32, 32768): (11.31, 4.40),
    ('stylegan3-r', 128, 1, 32, 32768): (58.44, 34.23), ('stylegan3-r', 128, 2, 32, 32768): (29.92, 17.29),
    ('stylegan3-r', 128, 4, 32, 32768): (15.49, 9.53), ('stylegan3-r', 128, 8, 32, 32768): (8.43, 5.69),
    ('stylegan3-t', 256, 1, 32, 32768): (89.15, 49.81), ('stylegan3-t', 256, 2, 32, 32768): (45.45, 25.05),
    ('stylegan3-t', 256, 4, 32, 32768): (23.94, 13.26), ('stylegan3-t', 256, 8, 32, 32768): (13.04, 7.32),
    ('stylegan3-r', 256, 1, 32, 32768): (87.37, 56.73), ('stylegan3-r', 256, 2, 32, 32768): (44.12, 28.60),
    ('stylegan3-r', 256, 4, 32, 32768): (22.42, 14.39), ('stylegan3-r', 256, 8, 32, 32768): (11.88, 8.03),
    ('stylegan3-t', 512, 1, 32, 32768): (137.33, 90.25), ('stylegan3-t', 512, 2, 32, 32768): (69.65, 45.42),
    ('stylegan3-t', 512, 4, 32, 32768): (34.88, 22.81), ('stylegan3-t', 512, 8, 32, 32768): (18.47, 12.29),
    ('stylegan3-r', 512, 1, 32, 32768): (158.91, 110.13), ('stylegan3-r', 512, 2, 32, 32768): (79.96, 55.18),
    ('stylegan3-r', 512, 4, 32, 32768): (40.86, 27.99), ('stylegan3-r', 512, 8, 32, 32768): (20.44, 14.04),
    ('stylegan3-t', 1024, 1, 32, 32768): (221.85, 156.91), ('stylegan3-t', 1024, 2, 32, 32768): (113.44, 79.16),
    ('stylegan3-t', 1024, 4, 32, 32768): (57.04, 39.62), ('stylegan3-t', 1024, 8, 32, 32768): (28.71, 20.01),
    ('stylegan3-r', 1024, 1, 32, 32768): (263.44, 184.81), ('stylegan3-r', 1024, 2, 32, 32768): (134.22, 92.58),
    ('stylegan3-r', 1024, 4, 32, 32768): (67.33, 46.53), ('stylegan3-r', 1024, 8, 32, 32768): (34.12, 23.42),
    ('stylegan2', 1024, 8, 32, 32768): (17.55, 14.57),      # `stylegan2` repro row (FFHQ 1024, gamma 10)
    ('stylegan2', 256, 8, 64, 16384): (4.01, 2.47),         # paper256
    ('stylegan2', 512, 8, 64, 32768): (9.11, 5.28),         # paper512
}


def official_figures(run):
    """(V100, A100, gpus) s/kimg of the official table row for this config's cfg, resolution, batch and cbase,
    preferring 8 GPUs; None if docs/configs.md has no such row."""
    for gpus in (8, 4, 2, 1):
        row = OFFICIAL_SEC_PER_KIMG.get((run.cfg, run.resolution, gpus, run.batch_size, run.cbase))
        if row:
            return row + (gpus,)
    return None

#----------------------------------------------------------------------------
# Devices.

class LibtpuMissing(RuntimeError):
    """Compiling for a TPU topology needs Google's libtpu (the `tpu` extra)."""


def topology_devices(topology: str):
    """The devices of TPU slice `topology` ('v5e:2x4', 'v4:2x2x2', 'v6e:4x4', ...), described by libtpu with no TPU
    attached; 'local' = jax.devices()."""
    import jax
    if topology == 'local':
        return list(jax.devices())
    if importlib.util.find_spec('libtpu') is None:
        raise LibtpuMissing("compiling for a TPU topology needs libtpu: pip install 'sg3jax[tpu]' (or "
                            "'libtpu==0.0.42.*' for jax 0.10.2, the version jax[tpu] pins)")
    # libtpu takes a machine-wide lock file meant for processes that drive real TPUs; a compile-only client
    # drives none, and must not fail because another planner (or a test) holds it.
    os.environ.setdefault('ALLOW_MULTIPLE_LIBTPU_LOAD', '1')
    from jax.experimental import topologies
    if ':' not in topology:
        raise ValueError(f'--topology {topology!r}: expected GENERATION:SHAPE, e.g. v5e:2x4 or v4:2x2x2 '
                         f"(chips per dimension), or 'local'")
    try:
        return list(topologies.get_topology_desc(platform='tpu', topology_name=topology).devices)
    except Exception as e:    # libtpu's message names the accepted forms
        raise ValueError(f'--topology {topology!r} is not a TPU slice libtpu knows: {e}') from None


@dataclasses.dataclass(frozen=True)
class Target:
    """What the run is compiled for: its devices and what one device has."""
    topology: str
    devices: tuple
    chip: Optional[chips_lib.Chip]   # None when the device kind has no entry in chips.py (GPUs)
    devices_per_chip: int            # 2 on v4 slices, whose topology lists each TensorCore as a device
    memory_bytes: int                # per device

    @property
    def num_devices(self):
        return len(self.devices)

    @property
    def num_chips(self):
        return self.num_devices // self.devices_per_chip

    @property
    def device_kind(self):
        return self.devices[0].device_kind


def make_target(topology: str) -> Target:
    devices = topology_devices(topology)
    kind = devices[0].device_kind
    chip = chips_lib.chip_for_device_kind(kind)
    coords = {tuple(getattr(d, 'coords', ())) for d in devices}
    per_chip = len(devices) // len(coords) if all(coords) and len(coords) else 1
    if chip is not None:
        memory = chip.hbm_bytes // per_chip
    else:
        stats = devices[0].memory_stats() if hasattr(devices[0], 'memory_stats') else None
        memory = int((stats or {}).get('bytes_limit', 0))
        if not memory:
            raise ValueError(f'no memory size known for device kind {kind!r} (not in sg3jax/planning/chips.py, '
                             f'and the device reports no bytes_limit); plan for a TPU --topology instead')
    return Target(topology, tuple(devices), chip, per_chip, memory)

#----------------------------------------------------------------------------
# Compiling the phases.

@dataclasses.dataclass(frozen=True)
class PhaseCost:
    """One compiled phase on one device: memory_analysis() and cost_analysis() figures. When the TPU compiler
    itself refuses the program for lack of HBM, `oom` holds its message, `temp_bytes` the temporaries it asked
    for, `argument_bytes` the inputs' size, and the cost figures are nan."""
    name: str
    argument_bytes: int
    output_bytes: int
    alias_bytes: int        # outputs written into donated arguments (the state): counted once
    temp_bytes: int
    code_bytes: int
    flops: float            # per device per call
    bytes_accessed: float   # HBM bytes per device per call
    xla_seconds: float      # the TPU cost model's estimate (optimal_seconds), nan if absent
    compile_seconds: float  # the TPU compiler's time, after lowering
    oom: str = ''           # the compiler's out-of-memory message, '' when it compiled

    @property
    def peak_bytes(self) -> int:
        """Live bytes while the phase runs: its arguments, outputs not aliased onto them, temporaries, code."""
        return self.argument_bytes + self.output_bytes - self.alias_bytes + self.temp_bytes + self.code_bytes


_UNITS = {'': 1, 'K': 2 ** 10, 'M': 2 ** 20, 'G': 2 ** 30, 'T': 2 ** 40}


def parse_oom(message: str) -> Optional[int]:
    """Bytes of temporaries in the TPU compiler's "Ran out of memory on HBM, the total memory required for HLO
    temporaries (18.01G) exceeds available HBM (15.75G)" (libtpu 0.0.42); None for other messages."""
    m = re.search(r'required for HLO temporaries \(([\d.]+)([KMGT]?)\)', message)
    return int(float(m.group(1)) * _UNITS[m.group(2)]) if m else None


def _nbytes_per_device(tree, num_devices):
    """Bytes per device of ShapeDtypeStructs: replicated leaves whole, `data`-sharded ones split."""
    import jax
    import numpy as np
    total = 0
    for x in jax.tree.leaves(tree):
        n = int(np.prod(x.shape)) * np.dtype(x.dtype).itemsize
        spec = getattr(getattr(x, 'sharding', None), 'spec', None)
        total += n // num_devices if spec and len(spec) and spec[0] == 'data' else n
    return total


def abstract_inputs(run, mesh):
    """(state, batch, key) as ShapeDtypeStructs with the trainer's shardings: the state from
    `jax.eval_shape(init_state)` (nothing allocated) replicated, the batch sharded on `data`."""
    import jax
    from jax.sharding import NamedSharding, PartitionSpec as P
    from sg3jax.training import steps as steps_lib
    repl, data = NamedSharding(mesh, P()), NamedSharding(mesh, P('data'))
    state = jax.eval_shape(lambda k: steps_lib.init_state(k, run), jax.random.key(0))
    state = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=repl), state)
    r, n = run.resolution, run.batch_size
    batch = {'img': jax.ShapeDtypeStruct((n, r, r, run.img_channels), 'float32', sharding=data),
             'c': jax.ShapeDtypeStruct((n, run.c_dim), 'float32', sharding=data)}
    key = jax.eval_shape(lambda: jax.random.key(0))
    return state, batch, key


def _cost_value(cost, name):
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float(cost.get(name, float('nan'))) if cost else float('nan')


class PhasePrograms:
    """The trainer's phases of resolved config `run` on `devices`, against abstract inputs (nothing allocated):
    `lower(name)` traces one phase to its program (seconds), `compile(name, lowered)` runs the TPU compiler on it
    (minutes at full size) and reads its figures. Split so that plan_table can key its cache on the lowered
    program before deciding to compile."""

    def __init__(self, run, devices):
        import numpy as np
        from jax.sharding import AxisType, Mesh
        from sg3jax.training import steps as steps_lib
        mesh = Mesh(np.asarray(devices), ('data',), axis_types=(AxisType.Auto,))
        self.num_devices, self.device_kind = len(devices), devices[0].device_kind
        self.steps = steps_lib.make_steps(run, mesh)       # in the official order
        self.args = abstract_inputs(run, mesh)

    def lower(self, name):
        return self.steps[name].lower(*self.args)

    def compile(self, name, lowered, log: Optional[Callable[[str], None]] = None) -> PhaseCost:
        import jax
        t0 = time.perf_counter()
        try:
            compiled = lowered.compile()
        except jax.errors.JaxRuntimeError as e:
            if 'RESOURCE_EXHAUSTED' not in str(e):
                raise
            temp = parse_oom(str(e)) or 0
            nan = float('nan')
            if log:
                log(f'{name}: refused by the compiler for lack of memory ({fmt_bytes(temp)} of temporaries)')
            return PhaseCost(name, _nbytes_per_device(self.args[:2], self.num_devices), 0, 0, temp, 0, nan, nan,
                             nan, time.perf_counter() - t0, oom=str(e).strip())
        seconds = time.perf_counter() - t0
        if log:
            log(f'compiled {name} for {self.num_devices} x {self.device_kind} in {seconds:.0f} s')
        mem, cost = compiled.memory_analysis(), compiled.cost_analysis()
        get = lambda f: int(getattr(mem, f, 0) or 0)
        xla_seconds = _cost_value(cost, 'optimal_seconds')
        return PhaseCost(
            name, get('argument_size_in_bytes'), get('output_size_in_bytes'), get('alias_size_in_bytes'),
            get('temp_size_in_bytes'), get('generated_code_size_in_bytes'), _cost_value(cost, 'flops'),
            _cost_value(cost, 'bytes accessed'),
            # The cost model sometimes returns a negative (overflowed) figure for large programs: unknown.
            xla_seconds if xla_seconds >= 0 else float('nan'), seconds)


def compile_phases(run, devices, phases: Optional[Sequence[str]] = None,
                   log: Optional[Callable[[str], None]] = None) -> Dict[str, PhaseCost]:
    """Compile the trainer's phases (all, or `phases`) of resolved config `run` for `devices`, in the official
    order; {name: PhaseCost}. `log` gets a line per phase compiled (full-size TPU compiles take minutes)."""
    programs = PhasePrograms(run, devices)
    return {name: programs.compile(name, programs.lower(name), log) for name in programs.steps
            if phases is None or name in phases}

#----------------------------------------------------------------------------
# The plan.

def phase_names(run) -> List[str]:
    """The phases `run` trains with, in the trainer's order (`run.phases`, from config.resolve)."""
    return [name for name, _ in run.phases]


def phase_calls_per_step(run) -> Dict[str, float]:
    """How often each phase runs per minibatch: 1 / its interval in `run.phases` (Greg every G_reg_interval,
    Dreg every D_reg_interval, the others every step)."""
    return {name: 1.0 / interval for name, interval in run.phases}


@dataclasses.dataclass(frozen=True)
class Plan:
    run: object                  # the resolved config
    target: Target
    phases: Dict[str, PhaseCost]
    hbm_fraction: float

    @property
    def usable_bytes(self) -> int:
        return int(self.target.memory_bytes * self.hbm_fraction)

    @property
    def peak_bytes(self) -> int:
        return max(p.peak_bytes for p in self.phases.values())

    @property
    def binding_phase(self) -> str:
        return max(self.phases.values(), key=lambda p: p.peak_bytes).name

    @property
    def fits(self) -> bool:
        return self.peak_bytes <= self.usable_bytes and not any(p.oom for p in self.phases.values())

    @property
    def flops_rate(self) -> Optional[float]:
        """Peak FLOP/s per device for this run's precision: float32 everywhere runs at bf16 / 6
        (Precision.HIGHEST); with bfloat16 top layers the FLOPs mix, and the bf16 peak is the optimistic bound."""
        chip = self.target.chip
        if chip is None:
            return None
        rate = chip.fp32_flops if self.run.precision == 'float32' else chip.bf16_flops
        return rate / self.target.devices_per_chip

    def roofline_seconds(self, phase: PhaseCost) -> Optional[float]:
        chip = self.target.chip
        if chip is None:
            return None
        bw = chip.hbm_bandwidth / self.target.devices_per_chip
        return max(phase.flops / self.flops_rate, phase.bytes_accessed / bw)

    def _sec_per_kimg(self, seconds_of) -> Optional[float]:
        calls = phase_calls_per_step(self.run)
        total = 0.0
        for name, phase in self.phases.items():
            s = seconds_of(phase)
            if s is None or s != s:
                return None
            total += calls.get(name, 1.0) * s
        return total * 1000.0 / self.run.batch_size

    @property
    def sec_per_kimg(self) -> Optional[float]:
        """Roofline lower bound on seconds per 1000 images."""
        return self._sec_per_kimg(self.roofline_seconds)

    @property
    def xla_sec_per_kimg(self) -> Optional[float]:
        """The same from the TPU cost model's optimal_seconds."""
        return self._sec_per_kimg(lambda p: p.xla_seconds)

    def to_dict(self) -> dict:
        return {'topology': self.target.topology, 'device_kind': self.target.device_kind,
                'num_devices': self.target.num_devices, 'num_chips': self.target.num_chips,
                'memory_per_device': self.target.memory_bytes, 'usable_per_device': self.usable_bytes,
                'cfg': self.run.cfg, 'resolution': self.run.resolution, 'batch_size': self.run.batch_size,
                'batch_per_device': self.run.batch_per_device, 'precision': self.run.precision,
                'num_fp16_res': self.run.num_fp16_res, 'remat': self.run.remat, 'fits': self.fits,
                'peak_bytes': self.peak_bytes,
                'binding_phase': self.binding_phase, 'sec_per_kimg': self.sec_per_kimg,
                'xla_sec_per_kimg': self.xla_sec_per_kimg,
                'phases': {n: dataclasses.asdict(p) for n, p in self.phases.items()}}


def resolve_for(config, target: Target):
    """The resolved run for `target`'s device count (the trainer's checks: batch divisibility, mbstd groups)."""
    from sg3jax.training import config as config_lib
    if config.cond:
        raise ValueError('config.cond=True: the label dimension comes from the dataset, which the plan does not '
                         'open; plan the unconditional model (labels add one small mapping input)')
    return config_lib.resolve(config, target.num_devices, c_dim=0, img_channels=3)


def make_plan(config, target: Target, hbm_fraction: float = DEFAULT_HBM_FRACTION,
              phases: Optional[Sequence[str]] = None, log: Optional[Callable[[str], None]] = None) -> Plan:
    """Compile every phase of `config` for `target` and return the Plan."""
    run = resolve_for(config, target)
    return Plan(run, target, compile_phases(run, target.devices, phases, log), hbm_fraction)


def log_to_stderr(line: str):
    print(f'[plan {time.strftime("%H:%M:%S")}] {line}', file=sys.stderr, flush=True)

#----------------------------------------------------------------------------
# Remedies.

def _with(config, **fields):
    """A copy of `config` (also of the locked one from the command line) with `fields` set."""
    from ml_collections import config_dict
    c = config_dict.ConfigDict(config.to_dict())
    c.update(fields)
    return c


def largest_fitting_batch(config, target: Target, plan: Plan) -> Optional[dict]:
    """The largest per-device batch (a multiple of mbstd_group) whose binding phase fits: memory is affine in the
    batch, so two compiles of that phase (the planned batch and the smallest one) give the line, and a third
    checks the prediction. Returns {'batch_size', 'batch_per_device', 'peak_bytes'} or None if even the
    smallest batch does not fit. Only the binding phase is compiled (assumed to stay the largest)."""
    run, group = plan.run, plan.run.mbstd_group
    n, name = target.num_devices, plan.binding_phase
    b1, m1 = run.batch_per_device, plan.phases[name].peak_bytes
    b0 = group
    if b0 >= b1:
        return None
    m0 = make_plan(_with(config, batch_size=b0 * n, batch_gpu=0), target, plan.hbm_fraction, [name]).peak_bytes
    slope = (m1 - m0) / (b1 - b0)
    b = b1 - 1 if slope <= 0 else b0 + int((plan.usable_bytes - m0) // slope)
    b = (min(b, b1 - 1) // group) * group
    for _ in range(4):      # the line is a prediction: check it, shrinking in proportion while it misses
        if b < b0:
            return None
        check = make_plan(_with(config, batch_size=b * n, batch_gpu=0), target, plan.hbm_fraction, [name])
        if check.fits:
            return {'batch_size': b * n, 'batch_per_device': b, 'peak_bytes': check.peak_bytes}
        b = min(b - group, (int(b * plan.usable_bytes / check.peak_bytes) // group) * group)
    return None


def bf16_plan(config, target: Target, plan: Plan) -> Optional[Plan]:
    """The binding phase with the top num_fp16_res resolutions in bfloat16 (config.precision); None when the run
    is already in a low precision."""
    if plan.run.precision != 'float32':
        return None
    num_fp16_res = plan.run.num_fp16_res or 4
    return make_plan(_with(config, precision='bfloat16', fp32=False, num_fp16_res=num_fp16_res), target,
                     plan.hbm_fraction, [plan.binding_phase])


def remat_plan(config, target: Target, plan: Plan) -> Optional[Plan]:
    """The binding phase with every G layer/block and D block rematerialised (config.remat); None when the run
    already rematerialises."""
    if plan.run.remat:
        return None
    return make_plan(_with(config, remat=True), target, plan.hbm_fraction, [plan.binding_phase])

#----------------------------------------------------------------------------
# Report.

def fmt_bytes(n) -> str:
    return f'{n / 2 ** 30:.2f} GiB' if abs(n) >= 2 ** 30 else f'{n / 2 ** 20:.1f} MiB'


def format_plan(plan: Plan) -> str:
    t, run = plan.target, plan.run
    lines = []
    chip = t.chip
    per = f'{t.devices_per_chip} devices per chip, ' if t.devices_per_chip > 1 else ''
    lines.append(f'# {run.cfg} {run.resolution}x{run.resolution} on {t.topology}: {t.num_devices} x '
                 f'{t.device_kind} ({per}{fmt_bytes(t.memory_bytes)} per device, usable '
                 f'{plan.hbm_fraction:.0%}), global batch {run.batch_size} ({run.batch_per_device}/device), '
                 f'precision {run.precision}' + (f' in the top {run.num_fp16_res} resolutions'
                                                 if run.precision != 'float32' else '') +
                 (f', rematerialised (layers keep: {run.remat_policy})' if run.remat else ''))
    if chip is not None:
        rate = 'bf16 peak' if run.precision != 'float32' else 'fp32 = bf16 peak / 6 (Precision.HIGHEST)'
        lines.append(f'# peak per device: {plan.flops_rate / 1e12:.1f} TFLOP/s ({rate}), '
                     f'{chip.hbm_bandwidth / t.devices_per_chip / 1e9:.0f} GB/s HBM  [{chip.source}]')
    lines.append('| phase | runs/step | arguments | outputs | aliased | temporaries | code | peak | GFLOP | '
                 'GB accessed | roofline ms | XLA est. ms | compile s |')
    lines.append('|---|---|---|---|---|---|---|---|---|---|---|---|---|')
    calls = phase_calls_per_step(run)
    for name, p in plan.phases.items():
        rl = plan.roofline_seconds(p)
        lines.append(f'| {name} | {calls.get(name, 1):.3g} | {fmt_bytes(p.argument_bytes)} | '
                     f'{fmt_bytes(p.output_bytes)} | {fmt_bytes(p.alias_bytes)} | {fmt_bytes(p.temp_bytes)} | '
                     f'{fmt_bytes(p.code_bytes)} | {fmt_bytes(p.peak_bytes)} | {p.flops / 1e9:.1f} | '
                     f'{p.bytes_accessed / 1e9:.2f} | ' + (f'{rl * 1e3:.1f}' if rl is not None else '-') +
                     f' | {p.xla_seconds * 1e3:.1f} | {p.compile_seconds:.0f} |')
    for p in plan.phases.values():
        if p.oom:
            lines.append(f'{p.name}: the TPU compiler refused it: {p.oom.splitlines()[0]} (its row shows the '
                         'inputs and the temporaries it asked for)')
    verdict = 'FITS' if plan.fits else 'DOES NOT FIT'
    lines.append(f'{verdict}: peak {fmt_bytes(plan.peak_bytes)} per device ({plan.binding_phase}) of '
                 f'{fmt_bytes(plan.usable_bytes)} usable ({plan.peak_bytes / t.memory_bytes:.0%} of HBM)')
    if plan.sec_per_kimg is not None:
        # The TPU cost model gives no optimal_seconds for some programs (nan): then only the roofline.
        xla = plan.xla_sec_per_kimg
        s = (f'estimated {plan.sec_per_kimg:.2f} sec/kimg (roofline lower bound; XLA cost model '
             + (f'{xla:.2f})' if xla is not None else 'gave no estimate)'))
        official = official_figures(run)
        if official:
            s += (f'; official {official[2]} x V100 {official[0]:.2f}, {official[2]} x A100 {official[1]:.2f} '
                  f'sec/kimg (NVlabs/stylegan3 docs/configs.md)')
        lines.append(s)
    return '\n'.join(lines)


def remedies(config, target: Target, plan: Plan, which: Sequence[str] = ('batch', 'bf16', 'remat')):
    """Print what would fit, and return {remedy: overrides dict or None}."""
    out = {}
    print(f'Does not fit: {plan.binding_phase} needs {fmt_bytes(plan.peak_bytes)} per device, '
          f'{fmt_bytes(plan.peak_bytes - plan.usable_bytes)} over the usable {fmt_bytes(plan.usable_bytes)}. '
          'What would fit:')
    if 'batch' in which:
        b = largest_fitting_batch(config, target, plan)
        if b:
            print(f"  - a smaller batch: --config.batch_size={b['batch_size']} ({b['batch_per_device']}/device, "
                  f"{plan.binding_phase} peak {fmt_bytes(b['peak_bytes'])}); the batch-derived values follow it. "
                  f'Or keep the batch on a larger slice.')
            out['batch'] = {'batch_size': b['batch_size'], 'batch_gpu': 0}
        else:
            print(f'  - a smaller batch: no, not even {plan.run.mbstd_group}/device (mbstd_group); use a '
                  'larger slice or a bigger chip')
            out['batch'] = None
    if 'bf16' in which:
        p = bf16_plan(config, target, plan)
        if p is not None:
            ok = 'fits' if p.fits else 'still does not fit'
            print(f'  - bfloat16 in the top {p.run.num_fp16_res} resolutions (--config.precision=bfloat16): '
                  f'{plan.binding_phase} peak {fmt_bytes(p.peak_bytes)}, {ok}')
            out['bf16'] = {'precision': 'bfloat16', 'num_fp16_res': p.run.num_fp16_res} if p.fits else None
        else:
            out['bf16'] = None
    if 'remat' in which:
        p = remat_plan(config, target, plan)
        if p is not None:
            ok = 'fits' if p.fits else 'still does not fit'
            print(f'  - rematerialisation, each layer recomputed in the backward pass (--config.remat=True, about '
                  f'a third more compute): {plan.binding_phase} peak {fmt_bytes(p.peak_bytes)}, {ok}')
            out['remat'] = {'remat': True} if p.fits else None
        else:
            out['remat'] = None
    return out


def overrides_flags(overrides: dict) -> List[str]:
    return [f'--config.{k}={v}' for k, v in overrides.items()]


#----------------------------------------------------------------------------
# Command line.

def main(argv):
    del argv
    from absl import flags
    FLAGS = flags.FLAGS
    if FLAGS.topology == 'local':
        # Planning on a multi-host allocation (launch/slurm.sbatch): join the job first, as sg3jax.train does.
        from sg3jax import distributed
        distributed.maybe_initialize()
    target = make_target(FLAGS.topology)
    config = FLAGS.config
    plan = make_plan(config, target, FLAGS.hbm_fraction, FLAGS.phases or None, log=log_to_stderr)
    print(format_plan(plan), flush=True)
    overrides = {}
    if not plan.fits and (FLAGS.suggest or FLAGS.fit != 'none'):
        which = ('batch', 'bf16', 'remat') if FLAGS.fit == 'none' else (FLAGS.fit,)
        found = remedies(config, target, plan, which)
        if FLAGS.fit != 'none' and found.get(FLAGS.fit):
            overrides = found[FLAGS.fit]
            print('FIT: ' + ' '.join(overrides_flags(overrides)))
    if FLAGS.json_out:
        utils.write_text_atomic(FLAGS.json_out, json.dumps({**plan.to_dict(), 'overrides': overrides}, indent=2,
                                                           default=str))
    if FLAGS.overrides_out:
        utils.write_text_atomic(FLAGS.overrides_out, ''.join(f'{f}\n' for f in overrides_flags(overrides)))
    if not plan.fits and not overrides:
        sys.exit(EXIT_DOES_NOT_FIT)


def define_flags():
    from absl import flags
    from ml_collections import config_flags
    config_flags.DEFINE_config_file('config', None, 'Training config file: configs/<cfg>.py[:arg].',
                                    lock_config=True)
    flags.DEFINE_string('topology', None, "TPU slice, GENERATION:SHAPE (v5e:2x4, v4:2x2x2, v5p:2x2x2, v6e:4x4), "
                        "or 'local' for the devices JAX sees.")
    flags.DEFINE_enum('fit', 'none', ['none', 'batch', 'bf16', 'remat'],
                      'If the run does not fit: apply this remedy and print/write its --config overrides.')
    flags.DEFINE_list('phases', [], 'Compile only these phases (Gmain,Greg,Dmain,Dreg,ema); default all. The '
                      'estimate then covers only those.')
    flags.DEFINE_bool('suggest', True, 'If the run does not fit, compile the remedies to say what would fit '
                      '(a few more compiles of the largest phase).')
    flags.DEFINE_float('hbm_fraction', DEFAULT_HBM_FRACTION, 'Fraction of each device memory the run may use.')
    flags.DEFINE_string('json_out', '', 'Write the plan as JSON here.')
    flags.DEFINE_string('overrides_out', '', 'Write the --config overrides of --fit here, one per line.')
    flags.mark_flags_as_required(['config', 'topology'])


if __name__ == '__main__':
    # Compile-only for a TPU slice from any host: keep JAX itself on the CPU (libtpu is used as a compiler).
    if not any(a.startswith('--topology=local') for a in sys.argv) and 'local' not in sys.argv:
        os.environ.setdefault('JAX_PLATFORMS', 'cpu')
    from absl import app
    define_flags()
    app.run(main)
