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
