"""The trainer and the quickstart as a user runs them: the quickstart itself, the dataset tool then the trainer,
--dry_run through the launch script, the data position of a resumed run, and bad input refused with one line
before anything compiles or is written."""

import json
import pathlib
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest
from PIL import Image

from sg3jax import quickstart, train
from sg3jax.training import checkpoint as ckpt
from sg3jax.training import config as config_lib
from subprocess_env import subprocess_env

REPO = pathlib.Path(__file__).resolve().parents[1]
TIMEOUT = 1800          # a safety net for a hung run, not a performance bound


def _module(*args):
    return subprocess.run([sys.executable, '-m', *args], cwd=REPO, env=subprocess_env(), capture_output=True,
                          text=True, timeout=TIMEOUT)


@pytest.fixture(scope='module')
def quickstart_run(tmp_path_factory):
    """`python -m sg3jax.quickstart` for 2 steps (64 images at its batch of 32), into a fresh workdir."""
    workdir = tmp_path_factory.mktemp('quickstart')
    out = _module('sg3jax.quickstart', '--workdir', str(workdir), '--kimg', '0.064')
    assert out.returncode == 0, out.stderr[-4000:]
    return workdir, out.stdout


def test_quickstart_trains_the_conditional_digits_model(quickstart_run):
    """The README's first command, shortened: the digits dataset, then the ordinary trainer on the conditional
    StyleGAN2 quickstart config, leaving a run directory whose grids show one row per class."""
    workdir, out = quickstart_run
    assert 'dataset: 1797 handwritten digits (16x16, 10 classes)' in out
    assert 'python -m sg3jax.train --config configs/stylegan2.py:quickstart' in out and out.rstrip().endswith(
        'device(s) used')
    stats = [json.loads(line) for line in (workdir / 'stats.jsonl').read_text().splitlines()]
    assert stats[-1]['Progress/kimg'] == pytest.approx(0.064)
    options = json.loads((workdir / 'training_options.json').read_text())
    assert (options['cfg'], options['c_dim'], options['img_channels'], options['cond']) == ('stylegan2', 10, 1, True)
    # The official conditional grid: one row per class (10), 32 columns of 16 px, grayscale.
    for name in ('fakes_init.png', 'fakes000000.png'):
        grid = Image.open(workdir / name)
        assert (grid.mode, grid.size) == ('L', (32 * 16, 10 * 16)), name
    rows = np.asarray(Image.open(workdir / 'fakes000000.png'), np.float32).reshape(10, 16, 32 * 16)
    assert all(np.abs(rows[i] - rows[i + 1]).mean() > 0 for i in range(9))     # each class row its own
    # The export samples by class, as the README shows.
    img_dir = workdir / 'samples'
    out = _module('sg3jax.gen_images', '--network', str(workdir), '--seeds', '0-1', '--class', '3',
                  '--outdir', str(img_dir))
    assert out.returncode == 0, out.stderr[-3000:]
    assert sorted(p.name for p in img_dir.iterdir()) == ['seed0000.png', 'seed0001.png']
    assert Image.open(img_dir / 'seed0000.png').size == (16, 16)


@pytest.mark.slow
def test_dry_run_through_launch_script_prints_config_and_memory(quickstart_run, tmp_path):
    """A tiny conditional StyleGAN2 on the quickstart's digits: the resolved config shows what came from the data
    (10 classes, 1 channel) and the values derived after the override (ema_kimg = batch * 10 / 32), then every
    phase is compiled for the global batch; nothing is written."""
    digits = quickstart_run[0] / 'digits16'
    out = subprocess.run(
        ['bash', str(REPO / 'launch' / 'local.sh'), f'configs/stylegan2.py:tiny,cond,data={digits}',
         str(tmp_path / 'run'), '--config.batch_size=16', '--dry_run'],
        cwd=REPO, env=subprocess_env(PYTHON=sys.executable), capture_output=True, text=True, timeout=TIMEOUT)
    assert out.returncode == 0, out.stderr[-3000:]
    text = out.stdout
    assert '"batch_size": 16' in text and '"ema_kimg": 5.0' in text
    assert '"c_dim": 10' in text and '"img_channels": 1' in text
    for phase in ('Gmain', 'Greg', 'Dmain', 'Dreg', 'ema'):  # StyleGAN2 has both lazy regularisers
        assert f'| {phase} |' in text, text[-2000:]
    assert 'global batch 16 (16/device)' in text
    assert not (tmp_path / 'run').exists()                   # a dry run writes nothing


@pytest.mark.slow
def test_dataset_tool_then_train_end_to_end(tmp_path):
    """The README path: the dataset tool on a folder of labelled images, then the trainer on it (StyleGAN3-T,
    conditional, the official sample grid: one row per class), leaves a run directory."""
    (tmp_path / 'imgs').mkdir()
    for i in range(24):
        Image.fromarray(np.random.RandomState(i).randint(0, 256, (16, 16, 3), dtype=np.uint8)).save(
            tmp_path / 'imgs' / f'{i}.png')
    (tmp_path / 'imgs' / 'dataset.json').write_text(json.dumps({'labels': [[f'{i}.png', i % 2] for i in range(24)]}))
    out = _module('sg3jax.dataset_tool', '--source', str(tmp_path / 'imgs'), '--dest', str(tmp_path / 'ds'))
    assert out.returncode == 0, out.stderr[-2000:]
    out = _module('sg3jax.train', '--config', f'configs/stylegan3_t.py:tiny,cond,data={tmp_path / "ds"}',
                  '--workdir', str(tmp_path / 'run'), '--config.kimg=0.016')
    assert out.returncode == 0, out.stderr[-3000:]
    names = {p.name for p in (tmp_path / 'run').iterdir()}
    assert {'fakes_init.png', 'fakes000000.png', 'stats.jsonl', 'checkpoints', 'network-snapshot-000000'} <= names
    assert Image.open(tmp_path / 'run' / 'fakes000000.png').size == (32 * 16, 2 * 16)


def test_bad_override_names_the_field(tmp_path):
    out = _module('sg3jax.train', '--config', 'configs/stylegan3_t.py:tiny', '--workdir', str(tmp_path / 'run'),
                  '--config.batch_size=6', '--dry_run')
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1] == (
        'error: config.batch_size (6) must be divisible by the device count (1) times config.batch_gpu (4)')
    assert not (tmp_path / 'run').exists()


def _refused(capsys, config, workdir, dry_run=False):
    """The trainer's exit status and its one-line message (run in this process, 8 devices: batch 32)."""
    code = train.run_trainer(config, str(workdir) if workdir else '', dry_run=dry_run)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, (code, err)
    return err[0]


def test_trainer_refuses_bad_input_before_anything_runs(quickstart_run, tmp_path, capsys):
    digits = str(quickstart_run[0] / 'digits16')
    config = config_lib.get_config('stylegan3-t', 'tiny')
    config.batch_size = 32
    assert _refused(capsys, config, None) == ('error: --workdir is required (the run directory: checkpoints, logs, '
                                              'sample grids)')
    assert _refused(capsys, config, tmp_path / 'run').startswith('error: config.data is required: a dataset made by')
    config.data, config.resolution = digits, 32
    assert _refused(capsys, config, tmp_path / 'run') == (
        f'error: config.resolution (32) does not match the dataset {digits!r} (16x16)')
    config.resolution, config.data = 16, str(tmp_path / 'missing')
    assert 'no such dataset directory' in _refused(capsys, config, tmp_path / 'run')
    assert not (tmp_path / 'run').exists()


def test_trainer_refuses_a_restart_with_other_settings(quickstart_run, tmp_path, capsys):
    """Restarting the quickstart's run with another gamma is the trainer's one-line error, exit status 2, and the
    run directory keeps its checkpoints and options."""
    workdir = tmp_path / 'run'
    shutil.copytree(quickstart_run[0], workdir)
    options = (workdir / 'training_options.json').read_text()
    config = quickstart.quickstart_config('stylegan2', str(workdir / 'digits16'))
    config.gamma = 0.5
    line = _refused(capsys, config, workdir)
    assert line.startswith(f'error: {workdir}/checkpoints step 2 was trained with other settings (gamma: 0.1 -> '
                           '0.5). A run restarted in its workdir continues that run'), line
    assert (workdir / 'training_options.json').read_text() == options



def test_trainer_refuses_a_workdir_whose_checkpoints_all_fail(quickstart_run, tmp_path, capsys):
    """Every checkpoint of the quickstart's run loses its commit marker: one line listing each step and why,
    exit status 2, and the step directories stay where they are."""
    workdir = tmp_path / 'run'
    shutil.copytree(quickstart_run[0], workdir)
    steps = sorted(int(p.name) for p in (workdir / 'checkpoints').iterdir())
    for step in steps:
        (workdir / 'checkpoints' / str(step) / ckpt.COMMIT_MARKER).unlink()
    config = quickstart.quickstart_config('stylegan2', str(workdir / 'digits16'))
    line = _refused(capsys, config, workdir)
    listed = '; '.join(f'{s}: FileNotFoundError: commit_success.txt is missing: its save did not complete'
                       for s in reversed(steps))
    assert line == (f'error: {workdir}/checkpoints: no checkpoint can be restored ({listed}). Nothing was changed; '
                    'move these step directories away to start this run from scratch'), line
    assert sorted(int(p.name) for p in (workdir / 'checkpoints').iterdir()) == steps


@pytest.mark.slow
def test_trainer_refuses_a_resume_source_it_cannot_use(quickstart_run, tmp_path, capsys):
    """--config.resume naming nothing, or a file that is no network pickle: one line each, no checkpoint."""
    config = quickstart.quickstart_config('stylegan2', str(quickstart_run[0] / 'digits16'))
    config.resume = str(tmp_path / 'missing.pkl')
    assert _refused(capsys, config, tmp_path / 'run') == (f'error: config.resume {tmp_path}/missing.pkl: no such '
                                                          'file or directory')
    (tmp_path / 'notes.pkl').write_text('not a pickle')
    config.resume = str(tmp_path / 'notes.pkl')
    assert _refused(capsys, config, tmp_path / 'run').startswith(f'error: config.resume: {tmp_path}/notes.pkl: ')
    assert not list((tmp_path / 'run' / 'checkpoints').iterdir())


def test_trainer_data_resumes_at_its_position(quickstart_run):
    """The trainer's input (train.make_data_fn, what loop.train gets) started at step k yields exactly the batches
    k, k+1, ... of an uninterrupted one: a resumed run continues with the next unseen images."""
    config = quickstart.quickstart_config('stylegan2', str(quickstart_run[0] / 'digits16'))
    config.mirror = True
    run = config_lib.resolve(config, num_devices=1, c_dim=10, img_channels=1)
    make_data = train.make_data_fn(config)
    whole = make_data(run, 0)
    batches = [next(whole) for _ in range(60)]          # 60 x 32 images: past the end of the first epoch
    resumed = make_data(run, 57)
    for k in (57, 58, 59):
        b = next(resumed)
        np.testing.assert_array_equal(b['img'], batches[k]['img'])
        np.testing.assert_array_equal(b['c'], batches[k]['c'])
    assert not np.array_equal(batches[57]['img'], batches[58]['img'])


def test_dry_run_fails_when_the_compiler_refuses_a_phase(monkeypatch, capsys):
    """The launch scripts stop on a failed dry run: a phase refused for lack of device memory must fail it."""
    from sg3jax.planning import plan

    def refuse(run, devices, phases=None, log=None):
        nan = float('nan')
        return {'Gmain': plan.PhaseCost('Gmain', 2 ** 20, 0, 0, 40 * 2 ** 30, 0, nan, nan, nan, 0.0,
                                        oom='RESOURCE_EXHAUSTED: Ran out of memory in memory space hbm')}
    monkeypatch.setattr(plan, 'compile_phases', refuse)
    config = config_lib.apply_tiny(config_lib.base_config('stylegan2'))
    config.batch_size = 4 * jax.device_count()
    with pytest.raises(SystemExit, match=r"refused \['Gmain'\].*RESOURCE_EXHAUSTED"):
        train.dry_run_phases(config)
    assert '| Gmain | 1.0 MiB | - | 40.00 GiB (refused) |' in capsys.readouterr().out
