"""The trainer's command line: --dry_run resolves the config and compiles every phase for the global batch."""

import os
import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]


def _env():
    env = dict(os.environ, JAX_PLATFORMS='cpu')
    env.pop('XLA_FLAGS', None)        # one CPU device, as a plain user run
    env.pop('SG3JAX_DISTRIBUTED', None)
    return env


def test_dry_run_through_launch_script_prints_config_and_memory(tmp_path):
    out = subprocess.run(
        ['bash', str(REPO / 'launch' / 'local.sh'), 'configs/stylegan2.py:tiny', str(tmp_path / 'run'),
         '--config.batch_size=16', '--dry_run'],
        cwd=REPO, env={**_env(), 'PYTHON': sys.executable}, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    text = out.stdout
    assert '"ema_kimg": 5.0' in text                       # batch 16 * 10 / 32, derived after the override
    assert '"batch_size": 16' in text
    for phase in ('Gmain', 'Greg', 'Dmain', 'Dreg', 'ema'):  # StyleGAN2 has both lazy regularisers
        assert f'| {phase} |' in text, text[-2000:]
    assert 'global batch 16 (16/device)' in text
    assert not (tmp_path / 'run').exists()                   # a dry run writes nothing


def test_bad_override_names_the_field(tmp_path):
    out = subprocess.run(
        [sys.executable, '-m', 'sg3jax.train', '--config', 'configs/stylegan3_t.py:tiny', '--workdir',
         str(tmp_path), '--config.batch_size=6', '--dry_run'],
        cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300)
    assert out.returncode != 0
    assert ('config.batch_size (6) must be divisible by the device count (1) times config.batch_gpu (4)'
            in out.stderr), out.stderr[-2000:]


def test_dataset_tool_then_train_end_to_end(tmp_path):
    """The README path: dataset_tool on a folder of images, then the trainer on it, leaves a run directory."""
    import numpy as np
    from PIL import Image
    (tmp_path / 'imgs').mkdir()
    for i in range(24):
        Image.fromarray(np.random.RandomState(i).randint(0, 256, (16, 16, 3), dtype=np.uint8)).save(
            tmp_path / 'imgs' / f'{i}.png')
    run = lambda *a: subprocess.run([sys.executable, '-m', *a], cwd=REPO, env=_env(), capture_output=True,
                                    text=True, timeout=600)
    out = run('sg3jax.dataset_tool', '--source', str(tmp_path / 'imgs'), '--dest', str(tmp_path / 'ds'))
    assert out.returncode == 0, out.stderr[-2000:]
    out = run('sg3jax.train', '--config', f'configs/stylegan3_t.py:tiny,data={tmp_path / "ds"}',
              '--workdir', str(tmp_path / 'run'), '--config.kimg=0.016')
    assert out.returncode == 0, out.stderr[-3000:]
    names = {p.name for p in (tmp_path / 'run').iterdir()}
    assert {'fakes_init.png', 'fakes000000.png', 'stats.jsonl', 'checkpoints', 'network-snapshot-000000'} <= names


def test_dry_run_fails_when_the_compiler_refuses_a_phase(monkeypatch, capsys):
    """The launch scripts stop on a failed dry run: a phase refused for lack of device memory must fail it."""
    import pytest
    from sg3jax import train
    from sg3jax.launch import plan
    from sg3jax.training import config as C

    def refuse(run, devices, phases=None, log=None):
        nan = float('nan')
        return {'Gmain': plan.PhaseCost('Gmain', 2 ** 20, 0, 0, 40 * 2 ** 30, 0, nan, nan, nan, 0.0,
                                        oom='RESOURCE_EXHAUSTED: Ran out of memory in memory space hbm')}
    import jax
    monkeypatch.setattr(plan, 'compile_phases', refuse)
    config = C.apply_tiny(C.base_config('stylegan2'))
    config.batch_size = 4 * jax.device_count()
    with pytest.raises(SystemExit, match=r"refused \['Gmain'\].*RESOURCE_EXHAUSTED"):
        train.dry_run(config)
    assert '| Gmain | 1.0 MiB | - | 40.00 GiB (refused) |' in capsys.readouterr().out
