"""The pod plan (sg3jax.planning.plan): the roofline and fit arithmetic on known numbers, and, with libtpu
installed (the `tpu` extra), real compiles for a v5e:2x2 slice from this CPU host.

The TPU compiler is slow on a tiny model too (tens of seconds per phase on 2 CPU cores), so the fast tests compile
one phase (Dreg) of the smallest model there is, StyleGAN2 at 8x8; the G step of the tiny StyleGAN3-T config
(with 4 synthesis layers) is the `slow` test.
"""

import dataclasses
import importlib.util
import json
import math
import os
import subprocess
import sys
import types

import pytest

from sg3jax.planning import chips, plan

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


needs_libtpu = pytest.mark.skipif(importlib.util.find_spec('libtpu') is None, reason="libtpu is absent: pip install 'sg3jax[tpu]' "
                                                            "(compiling for a TPU topology needs it)")

#----------------------------------------------------------------------------
# Arithmetic, no compiler.

def _phase(name, flops, nbytes, arg=100, out=100, alias=100, temp=1000, code=10, xla=0.001, oom=''):
    return plan.PhaseCost(name, arg, out, alias, temp, code, flops, nbytes, xla, 0.0, oom)


def _fake_plan(phases, precision='float32', chip='v5e', per_chip=1, batch=32, memory=None):
    c = chips.CHIPS[chip]
    target = plan.Target('fake', (types.SimpleNamespace(device_kind=c.device_kind[0]),) * 8, c, per_chip,
                         memory or c.hbm_bytes // per_chip)
    run = types.SimpleNamespace(cfg='stylegan3-t', resolution=256, batch_size=batch, batch_per_device=batch // 8,
                                precision=precision, num_fp16_res=4, G_reg_interval=None, D_reg_interval=16,
                                phases=(('Gmain', 1), ('Dmain', 1), ('Dreg', 16), ('ema', 1)), cbase=32768,
                                mbstd_group=4, remat=False)
    return plan.Plan(run, target, {p.name: p for p in phases}, 0.95)


def test_roofline_known_answer():
    v5e = chips.CHIPS['v5e']
    # Gmain compute-bound: 6.566e12 FLOPs at 197e12 / 6 FLOP/s = 0.2 s; its 1 GB is 1.2 ms at 819 GB/s.
    # Dmain memory-bound: 819 GB at 819 GB/s = 1 s. Dreg: 0.2 s of compute, run every 16th step.
    p = _fake_plan([_phase('Gmain', 6.566e12, 1e9), _phase('Dmain', 1e9, 819e9), _phase('ema', 0, 0),
                    _phase('Dreg', 6.566e12, 0)])
    assert math.isclose(p.roofline_seconds(p.phases['Gmain']), 6.566e12 / (v5e.bf16_flops / 6))
    assert math.isclose(p.roofline_seconds(p.phases['Dmain']), 1.0)
    step = 6.566e12 / (197e12 / 6) + 1.0 + 0.0 + 6.566e12 / (197e12 / 6) / 16
    assert math.isclose(p.sec_per_kimg, step * 1000 / 32)
    # bfloat16 top layers: the optimistic bound uses the bf16 peak.
    q = _fake_plan(list(p.phases.values()), precision='bfloat16')
    assert math.isclose(q.roofline_seconds(q.phases['Gmain']), 6.566e12 / 197e12)
    # Two devices per chip (v4 slices list TensorCores): half the chip's rates and HBM each.
    r = _fake_plan([_phase('Gmain', 275e12 / 6 / 2, 0)], chip='v4', per_chip=2)
    assert math.isclose(r.roofline_seconds(r.phases['Gmain']), 1.0)
    assert r.target.memory_bytes == 16 * chips.GiB


def test_fit_and_peak():
    # peak = arguments + outputs - aliased + temporaries + code.
    ph = _phase('Gmain', 1, 1, arg=3, out=5, alias=2, temp=7, code=11)
    assert ph.peak_bytes == 3 + 5 - 2 + 7 + 11
    usable = int(chips.CHIPS['v5e'].hbm_bytes * 0.95)
    assert _fake_plan([_phase('Gmain', 1, 1, temp=usable - 200)]).fits
    big = _fake_plan([_phase('Gmain', 1, 1, temp=usable - 99), _phase('ema', 0, 0)])
    assert not big.fits and big.binding_phase == 'Gmain'
    assert 'DOES NOT FIT' in plan.format_plan(big)
    # The TPU cost model gives no optimal_seconds for some full-size programs: the report still prints.
    nan_xla = _fake_plan([_phase('Gmain', 1e12, 1e9, xla=float('nan')), _phase('ema', 0, 0)])
    assert nan_xla.xla_sec_per_kimg is None and nan_xla.sec_per_kimg > 0
    assert 'XLA cost model gave no estimate' in plan.format_plan(nan_xla)
    # A phase the compiler refused never fits, whatever the numbers say.
    assert not _fake_plan([_phase('Gmain', 1, 1, temp=10, oom='RESOURCE_EXHAUSTED: ...')]).fits


def test_parse_oom():
    msg = ('RESOURCE_EXHAUSTED: Ran out of memory on HBM, the total memory required for HLO temporaries '
           '(18.01G) exceeds available HBM (15.75G).')
    assert plan.parse_oom(msg) == int(18.01 * 2 ** 30)
    assert plan.parse_oom('RESOURCE_EXHAUSTED: something else') is None


def test_official_figures():
    run = types.SimpleNamespace(cfg='stylegan3-t', resolution=1024, batch_size=32, cbase=32768)
    assert plan.official_figures(run) == (28.71, 20.01, 8)
    run.resolution = 256
    assert plan.official_figures(run) == (13.04, 7.32, 8)
    run.batch_size = 48
    assert plan.official_figures(run) is None


def test_chip_table():
    assert chips.chip_for_device_kind('TPU v5 lite').name == 'v5e'
    assert chips.chip_for_device_kind('TPU v4').name == 'v4'
    assert chips.chip_for_device_kind('NVIDIA H100') is None
    for c in chips.CHIPS.values():
        assert c.hbm_bytes > 0 and c.bf16_flops > 1e14 and c.hbm_bandwidth > 5e11
        assert math.isclose(c.fp32_flops * 6, c.bf16_flops)

def _affine_make_plan(per_image, fixed, remat_factor=0.5, bf16_factor=0.7):
    """A stand-in for plan.make_plan: the binding phase's temporaries are `fixed` + `per_image` per image on the
    device, scaled by `remat_factor` with config.remat and `bf16_factor` with bfloat16. Records each call."""
    calls = []

    def make_plan(config, target, hbm_fraction=0.95, phases=None):
        b = config.batch_size // target.num_devices
        temp = fixed + per_image * b
        temp *= remat_factor if config.remat else 1
        temp *= bf16_factor if config.precision == 'bfloat16' else 1
        calls.append((b, config.remat, config.precision))
        p = _fake_plan([_phase('Gmain', 1e12, 1e9, arg=0, out=0, alias=0, temp=int(temp), code=0)],
                       precision=config.precision, batch=config.batch_size)
        p.run.remat, p.run.batch_per_device = config.remat, b
        return p
    return make_plan, calls


def _base_config(batch_per_device):
    from sg3jax.training import config as config_lib
    config = config_lib.get_config('stylegan2', 'tiny')
    config.batch_size = 8 * batch_per_device
    return config


def test_remedies_find_what_fits(monkeypatch):
    usable = int(chips.CHIPS['v5e'].hbm_bytes * 0.95)
    # 1 GiB fixed + 1 GiB per image: 32/device needs 33 GiB; 12/device (14 would be 15 GiB > 15.2 usable) fits.
    fake, calls = _affine_make_plan(per_image=chips.GiB, fixed=chips.GiB)
    monkeypatch.setattr(plan, 'make_plan', fake)
    config = _base_config(32)
    p = fake(config, _fake_plan([]).target)
    assert not p.fits
    found = plan.remedies(config, p.target, p)
    b = found['batch']['batch_size'] // 8
    assert b % 4 == 0 and chips.GiB * (1 + b) <= usable < chips.GiB * (1 + b + 4)
    assert found['batch']['batch_gpu'] == 0
    assert len([c for c in calls if not c[1] and c[2] == 'float32']) <= 1 + 1 + 4   # the plan, the line, checks
    # 33 GiB * 0.7 and * 0.5 are both still over 15.2: neither remedy is offered as a fit.
    assert found['bf16'] is None and found['remat'] is None
    assert (32, True, 'float32') in calls and (32, False, 'bfloat16') in calls
    # A smaller run that rematerialisation brings under the limit.
    config = _base_config(20)
    p = fake(config, p.target)
    found = plan.remedies(config, p.target, p, which=('remat',))
    assert found == {'remat': {'remat': True}}
    assert plan.overrides_flags(found['remat']) == ['--config.remat=True']


def _fake_programs(compiled, refuse=()):
    """A stand-in for plan.PhasePrograms: a phase's "program" is its resolved config, its name and
    `programs.code` (the code that makes it); compile() records the phase and returns fixed figures, or the
    compiler's refusal for the phases in `refuse`."""
    class Programs:
        code = 'v1'

        def __init__(self, run, devices):
            self.run = run

        def lower(self, name):
            text = json.dumps([self.run.to_dict(), name, Programs.code], sort_keys=True, default=str)
            return types.SimpleNamespace(as_text=lambda: text)

        def compile(self, name, lowered, log=None):
            compiled.append(name)
            if name in refuse:
                return dataclasses.replace(_phase(name, math.nan, math.nan), oom='RESOURCE_EXHAUSTED')
            return _phase(name, 1e12, 1e9)
    return Programs


def test_plan_table_resumes_from_its_phase_cache(monkeypatch, tmp_path):
    """plan_table saves every compiled phase and reads it back: an interrupted generation (full-size rows take
    an hour on a small host) resumes without compiling again; a changed program compiles afresh."""
    from sg3jax.planning import plan_table
    compiled = []
    programs = _fake_programs(compiled)
    monkeypatch.setattr(plan, 'PhasePrograms', programs)
    v6e = chips.CHIPS['v6e']
    target = plan.Target('v6e:2x4', (types.SimpleNamespace(device_kind=v6e.device_kind[0]),) * 8, v6e, 1,
                         v6e.hbm_bytes)
    first = plan_table.plan_row('sg2-256', target, str(tmp_path))
    assert compiled == ['Gmain', 'Greg', 'Dmain', 'Dreg', 'ema'] == list(first.phases)
    again = plan_table.plan_row('sg2-256', target, str(tmp_path))
    assert len(compiled) == 5 and again.phases == first.phases
    assert plan_table.plan_row('sg2-256', target, str(tmp_path), compile=False).phases == first.phases
    assert plan_table.plan_row('sg2-512', target, str(tmp_path), compile=False) is None and len(compiled) == 5
    assert again.sec_per_kimg == first.sec_per_kimg > 0
    text = plan_table.render('v6e:2x4', [('sg2-256', again)], ['t256'])
    assert '| stylegan2 | 256 | 64 (8) | float32 |' in text and 'Not generated yet: t256' in text
    # Another row (another resolved config, so other programs) is not read from this row's entries,
    plan_table.plan_row('t256', target, str(tmp_path))
    assert compiled[5:] == ['Gmain', 'Dmain', 'Dreg', 'ema']
    # nor is this row once the code makes other programs.
    programs.code = 'v2'
    plan_table.plan_row('sg2-256', target, str(tmp_path))
    assert len(compiled) == 14
    # A row with a remedy suffix is planned with it; unknown rows or suffixes are one clear error.
    assert plan_table.row_config('r512+remat+bf16').remat and plan_table.row_config('r512+bf16').precision == 'bfloat16'
    masks = plan_table.row_config('t256+remat_masks')
    assert masks.remat and masks.remat_policy == 'masks'
    assert plan_table.row_config('t256+remat_convs').remat_policy == 'masks_and_convs'
    label = lambda **run: plan_table.remat_label(types.SimpleNamespace(**run))
    assert label(remat=True, remat_policy='masks') == ' + remat (masks)'
    assert label(remat=True, remat_policy='inputs') == ' + remat' and label(remat=False, remat_policy='inputs') == ''
    with pytest.raises(ValueError, match="unknown suffix.*'t256\\+fast'"):
        plan_table.parse_row('t256+fast')
    with pytest.raises(ValueError, match="unknown row 't128'"):
        plan_table.parse_row('t128')
    text = plan_table.render('v6e:2x4', [('t256+bf16', plan_table.plan_row('t256+bf16', target))], [])
    # A phase the compiler refuses ends the row: it does not fit, and the other phases are not compiled.
    monkeypatch.setattr(plan, 'PhasePrograms', _fake_programs(compiled, refuse=('Dmain',)))
    for _ in range(2):      # compiled, then from the cache
        row = plan_table.plan_row('t512', target, str(tmp_path))
        assert list(row.phases) == ['Gmain', 'Dmain'] and not row.fits and row.sec_per_kimg is None
    assert 'Dreg not compiled' in plan_table.render('v6e:2x4', [('t512', row)], [])
    # Regenerating keeps the text around the markers.
    doc = tmp_path / 'doc.md'
    doc.write_text(f'intro\n{plan_table.BEGIN}\nold table\n{plan_table.END}\n\nfindings\n')
    plan_table.write_table(str(doc), text)
    assert doc.read_text() == f'intro\n{plan_table.BEGIN}\n{text}{plan_table.END}\n\nfindings\n'
    # A file without the markers (a README) is refused, not overwritten; a new file gets just the table.
    readme = tmp_path / 'README.md'
    readme.write_text('# project\n')
    with pytest.raises(ValueError, match='README.md exists without the lines'):
        plan_table.write_table(str(readme), text)
    assert readme.read_text() == '# project\n'
    plan_table.write_table(str(tmp_path / 'new.md'), text)
    assert (tmp_path / 'new.md').read_text() == f'{plan_table.BEGIN}\n{text}{plan_table.END}\n'
    assert '| stylegan3-t | 256 | 32 (4) | bfloat16 (top 4 res) |' in text and '(Gmain; Dmain 0.' in text


#----------------------------------------------------------------------------
# Real compiles for v5e:2x2 (libtpu).

def _sg2_tiny(batch_per_device, devices=4):
    from sg3jax.training import config as config_lib
    config = config_lib.get_config('stylegan2', 'tiny,res=8')
    config.batch_size = batch_per_device * devices
    config.batch_gpu = 4
    return config


@pytest.fixture(scope='module')
def v5e_2x2():
    return plan.make_target('v5e:2x2')


@needs_libtpu
def test_topology_target(v5e_2x2):
    assert v5e_2x2.num_devices == 4 and v5e_2x2.chip.name == 'v5e' and v5e_2x2.devices_per_chip == 1
    assert v5e_2x2.memory_bytes == 16 * chips.GiB
    with pytest.raises(ValueError, match='GENERATION:SHAPE'):
        plan.make_target('v5e')


@needs_libtpu
def test_compiles_with_positive_figures(v5e_2x2):
    p = plan.make_plan(_sg2_tiny(4), v5e_2x2, phases=['Dreg'])
    d = p.phases['Dreg']
    assert not d.oom and p.fits
    assert d.argument_bytes > 0 and d.output_bytes > 0 and d.code_bytes > 0 and d.peak_bytes > 0
    assert d.flops > 0 and d.bytes_accessed > 0 and p.sec_per_kimg > 0


@needs_libtpu
def test_refused_memory_grows_with_batch(v5e_2x2):
    # Fast: the compiler refuses these within seconds, and what it asks for scales with the batch.
    a = plan.make_plan(_sg2_tiny(2 ** 20), v5e_2x2, phases=['Dreg']).phases['Dreg']
    b = plan.make_plan(_sg2_tiny(2 ** 21), v5e_2x2, phases=['Dreg']).phases['Dreg']
    assert a.oom and b.oom
    assert b.argument_bytes > a.argument_bytes and b.temp_bytes > 1.5 * a.temp_bytes


@needs_libtpu
def test_plan_table_cache_key_is_the_lowered_program(v5e_2x2):
    """plan_table's committed cache is keyed by each phase's program as lowered: a fresh trace of the same config
    gives the same key; a change to a number the step uses (R1 gamma) or to the batch gives another."""
    from sg3jax.planning import plan_table

    def key(config):
        programs = plan.PhasePrograms(plan.resolve_for(config, v5e_2x2), v5e_2x2.devices)
        return plan_table.cache_key(programs.lower('Dreg'), v5e_2x2.topology)
    config = _sg2_tiny(4)
    base = key(config)
    assert key(_sg2_tiny(4)) == base
    other = _sg2_tiny(4)
    other.gamma = 2 * (config.gamma or 1.0)
    assert key(other) != base and key(_sg2_tiny(8)) != base


@pytest.mark.slow
@needs_libtpu
def test_compiled_memory_grows_with_batch(v5e_2x2):
    small = plan.make_plan(_sg2_tiny(4), v5e_2x2, phases=['Dreg'])
    large = plan.make_plan(_sg2_tiny(16), v5e_2x2, phases=['Dreg'])
    for p in (small, large):
        d = p.phases['Dreg']
        assert not d.oom and p.fits
        assert d.argument_bytes > 0 and d.output_bytes > 0 and d.code_bytes > 0 and d.peak_bytes > 0
        assert d.flops > 0 and d.bytes_accessed > 0
        assert p.sec_per_kimg > 0
    # The batch shard is an argument, and the activations temporaries: both grow with the per-device batch.
    assert large.phases['Dreg'].argument_bytes > small.phases['Dreg'].argument_bytes
    assert large.peak_bytes > small.peak_bytes
    assert large.phases['Dreg'].flops > 2 * small.phases['Dreg'].flops


@needs_libtpu
def test_too_large_is_reported_with_numbers(v5e_2x2):
    # 2^20 images of 8x8 per chip: the compiler itself refuses it for lack of HBM (about 92 GiB of temporaries).
    p = plan.make_plan(_sg2_tiny(2 ** 20), v5e_2x2, phases=['Dreg'])
    assert not p.fits
    d = p.phases['Dreg']
    assert 'RESOURCE_EXHAUSTED' in d.oom and d.temp_bytes > 16 * chips.GiB
    assert d.argument_bytes >= 2 ** 20 * 8 * 8 * 3 * 4      # the per-device image batch alone
    text = plan.format_plan(p)
    assert 'DOES NOT FIT' in text and 'GiB' in text and 'refused' in text


@needs_libtpu
def test_cli_refuses_with_exit_code():
    """The launch scripts rely on the exit status: 3 when the run does not fit."""
    env = dict(os.environ, JAX_PLATFORMS='cpu')
    env.pop('XLA_FLAGS', None)
    proc = subprocess.run(
        [sys.executable, '-m', 'sg3jax.planning.plan', '--config', 'configs/stylegan2.py:tiny,res=8',
         f'--config.batch_size={4 * 2 ** 20}', '--config.batch_gpu=4', '--topology', 'v5e:2x2', '--phases=Dreg', '--nosuggest'],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == plan.EXIT_DOES_NOT_FIT, proc.stdout + proc.stderr[-3000:]
    assert 'DOES NOT FIT' in proc.stdout


@pytest.mark.long
@needs_libtpu
def test_cli_fit_batch_finds_a_batch_the_compiler_accepts(tmp_path):
    """--fit=batch end to end with the real TPU compiler: a batch it refuses, then the largest per-chip batch
    that fits, written as the --config overrides the launch script adds; exit status 0. A `long` test (over 10
    min on 2 cores: the compiler is slow on batches near the HBM limit); the search itself is tested against a
    stand-in compiler in the default run."""
    env = dict(os.environ, JAX_PLATFORMS='cpu')
    env.pop('XLA_FLAGS', None)
    overrides = tmp_path / 'overrides.txt'
    proc = subprocess.run(
        [sys.executable, '-m', 'sg3jax.planning.plan', '--config', 'configs/stylegan2.py:tiny,res=8',
         f'--config.batch_size={4 * 2 ** 20}', '--config.batch_gpu=4', '--topology', 'v5e:2x2', '--phases=Dreg',
         '--fit=batch', f'--overrides_out={overrides}'],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=3600)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    flags = overrides.read_text().split()
    assert flags[1] == '--config.batch_gpu=0' and flags[0].startswith('--config.batch_size='), flags
    batch = int(flags[0].split('=')[1])
    assert batch % (4 * 4) == 0 and 4 * 4 <= batch < 4 * 2 ** 20
    # The run with those overrides applied compiles and fits.
    config = _sg2_tiny(batch // 4)
    config.batch_gpu = 0
    ok = plan.make_plan(config, plan.make_target('v5e:2x2'), phases=['Dreg'])
    assert ok.fits, plan.format_plan(ok)
    assert 'FIT: --config.batch_size=' in proc.stdout


@pytest.mark.slow
@needs_libtpu
def test_tiny_sg3_g_step_compiles(v5e_2x2):
    """The G step (Gmain: G forward and backward, the custom backward of filtered_lrelu included) of the tiny
    StyleGAN3-T config (the trainer's smoke config) compiles for v5e:2x2 and fits. Its synthesis has 4 layers
    instead of the official 14, built alike (tests/tiny_training.py: every kind of layer, the last critically
    sampled), which cuts its compile by a third (113 -> 74 s on a 2-core host). (Dmain runs the same G forward without gradients; D's phases are
    StyleGAN2's D, compiled above; the EMA has no network.)"""
    from sg3jax.training import config as config_lib
    from tiny_training import with_sg3_layers
    config = config_lib.get_config('stylegan3-t', 'tiny')
    config.batch_size = 16
    run = with_sg3_layers(plan.resolve_for(config, v5e_2x2), 4)
    p = plan.Plan(run, v5e_2x2, plan.compile_phases(run, v5e_2x2.devices, ['Gmain']), plan.DEFAULT_HBM_FRACTION)
    assert set(p.phases) == {'Gmain'}
    assert p.fits and all(ph.peak_bytes > 0 and ph.flops > 0 and not ph.oom for ph in p.phases.values())
