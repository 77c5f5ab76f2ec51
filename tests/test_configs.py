"""Training configs: the config files load (also through ml_collections' flag machinery), resolve() derives the
official values (train.py, training_loop.py), presets carry the docs/configs.md numbers, and each bad field is
refused with an error naming it."""

import json
import math

import jax
import numpy as np
import pytest
from absl import flags
from ml_collections import config_dict, config_flags

from sg3jax.networks import discriminator, generator, presets
from sg3jax.training import config as config_lib

def load(cfg):
    """configs/<cfg>.py, read as a module."""
    return config_lib.config_file(cfg)


def get(cfg, arg=None, /, **overrides):
    config = load(cfg).get_config(arg)
    config.update(overrides)
    return config


def variants(cfg):
    out = [None, '', 'tiny', 'res=64', 'data=/data/x,cond,mirror', 'tiny,res=32,data=mnist',
           'preset=ffhq1024,tiny']
    return out + [f'preset={name}' for name in config_lib.presets_of(cfg)]

#----------------------------------------------------------------------------
# Config files.

@pytest.mark.parametrize('cfg', config_lib.CFGS)
def test_every_config_file_and_variant_loads(cfg):
    for arg in variants(cfg):
        config = load(cfg).get_config(arg)
        assert isinstance(config, config_dict.ConfigDict), arg
        assert config.cfg == cfg
        assert set(config.keys()) == set(config_lib.base_config(cfg).keys()), arg
        if config.gamma is not None:
            if '://' in config.resume:      # the MetFaces rows: NVIDIA's URL, to download first (refused)
                with pytest.raises(NotImplementedError, match='downloading is not implemented'):
                    config_lib.resolve(config, num_devices=8)
                config.resume = '/models/' + config.resume.rsplit('/', 1)[1]
            config_lib.resolve(config, num_devices=1 if arg and 'tiny' in arg else 8)


def test_variant_arguments():
    config = get('stylegan3-t', 'res=64,data=/data/x,cond,mirror')
    assert (config.resolution, config.data, config.cond, config.mirror) == (64, '/data/x', True, True)
    assert get('stylegan3-t', 'tiny,res=32').resolution == 32          # explicit res wins over tiny
    assert get('stylegan3-t', 'preset=afhqv2-512').mirror               # a preset's mirror stays on
    with pytest.raises(ValueError, match="unknown config argument 'rez'.*known: .*'res'"):
        get('stylegan3-t', 'rez=64')
    with pytest.raises(ValueError, match="unknown preset 'ffhq2048'"):
        get('stylegan3-t', 'preset=ffhq2048')
    with pytest.raises(ValueError, match="preset 'paper256' has no stylegan3-t setting"):
        get('stylegan3-t', 'preset=paper256')


def test_config_flags_load_override_and_lock():
    """Through DEFINE_config_file as the trainer will: `file:arg`, --config.x overrides, misspellings refused."""
    path = str(config_lib.CONFIGS_DIR / config_lib.CONFIG_FILES['stylegan3-r'])

    def parse(*overrides):
        argv = ['train', f'--config={path}:preset=ffhq1024,data=/data/ffhq', *overrides]
        fv = flags.FlagValues()
        config_flags.DEFINE_config_file('config', None, flag_values=fv, lock_config=True, sys_argv=argv)
        fv(argv)
        return fv.config

    config = parse('--config.batch_size=64', '--config.glr=0.003', '--config.metrics=fid50k_full,eqt50k_int')
    assert (config.batch_size, config.glr, config.gamma, config.data) == (64, 0.003, 32.8, '/data/ffhq')
    assert config_lib.metric_names(config.metrics) == ['fid50k_full', 'eqt50k_int']
    run = config_lib.resolve(config, num_devices=8)
    assert run.ema_kimg == 64 * 10 / 32 and run.G_opt_kwargs.lr == 0.003
    with pytest.raises(AttributeError, match=r'batch_sz.*Did you mean "batch_size"'):
        parse('--config.batch_sz=64')

#----------------------------------------------------------------------------
# Derived values.

def test_resolve_official_derived_values():
    config = get('stylegan3-t', 'preset=ffhq1024')
    run = config_lib.resolve(config, num_devices=8)
    assert run.ema_kimg == 10.0 and run.batch_gpu == 4 and run.batch_per_device == 4
    assert run.glr == 0.0025 and run.map_depth == 2 and run.blur_fade_kimg == 0
    assert run.magnitude_ema_beta == 0.5 ** (32 / 20000)

    config.batch_size = 64                                              # derived values follow the override
    run = config_lib.resolve(config, num_devices=8)
    assert run.ema_kimg == 64 * 10 / 32 and run.batch_gpu == 8
    assert run.magnitude_ema_beta == 0.5 ** (64 / 20000)
    assert run.G_kwargs.magnitude_ema_beta == 0.5 ** (64 / 20000)

    # Lazy regularisation (training_loop.py): D every 16 minibatches, SG3's G has none.
    assert math.isclose(run.D_opt_kwargs.lr, 0.002 * 16 / 17)
    assert np.allclose(run.D_opt_kwargs.betas, (0.0, 0.99 ** (16 / 17)))
    assert run.G_opt_kwargs.lr == 0.0025 and tuple(run.G_opt_kwargs.betas) == (0.0, 0.99)
    assert run.G_opt_kwargs.eps == run.D_opt_kwargs.eps == 1e-8
    # The official 'Gboth' with pl_weight 0 is the main phase alone.
    assert run.phases == (('Gmain', 1), ('Dmain', 1), ('Dreg', 16), ('ema', 1))
    assert run.loss_kwargs.to_dict() == dict(r1_gamma=32.8, style_mixing_prob=0.0, pl_weight=0.0, pl_batch_shrink=2,
                                             pl_decay=0.01, blur_init_sigma=0.0, blur_fade_kimg=0.0)


def test_resolve_stylegan3_r_and_stylegan2():
    run = config_lib.resolve(get('stylegan3-r', 'preset=ffhq1024', batch_size=64), num_devices=8)
    assert run.loss_kwargs.blur_init_sigma == 10 and run.blur_fade_kimg == 64 * 200 / 32
    assert run.G_kwargs.conv_kernel == 1 and run.G_kwargs.channel_base == 2 * 32768

    run = config_lib.resolve(get('stylegan2', 'preset=ffhq1024'), num_devices=8)
    assert run.glr == 0.002 and run.map_depth == 8 and run.magnitude_ema_beta is None
    assert 'magnitude_ema_beta' not in run.G_kwargs
    assert math.isclose(run.G_opt_kwargs.lr, 0.002 * 4 / 5)
    assert np.allclose(run.G_opt_kwargs.betas, (0.0, 0.99 ** (4 / 5)))
    assert run.phases == (('Gmain', 1), ('Greg', 4), ('Dmain', 1), ('Dreg', 16), ('ema', 1))
    assert run.loss_kwargs.style_mixing_prob == 0.9 and run.loss_kwargs.pl_weight == 2

    # Without lazy intervals: no regularisation phase, Adam unadjusted; with a weight to regularise with, the
    # official 'Gboth'/'Dboth' phases, which are refused before anything runs.
    run = config_lib.resolve(get('stylegan2', 'preset=ffhq1024', G_reg_interval=0, D_reg_interval=0, pl_weight=0.0,
                        gamma=0.0), num_devices=8)
    assert run.phases == (('Gmain', 1), ('Dmain', 1), ('ema', 1)) and run.G_reg_interval is None
    assert run.D_opt_kwargs.lr == 0.002 and run.G_opt_kwargs.lr == 0.002
    with pytest.raises(NotImplementedError, match=r"config\.G_reg_interval \(0\): .*'Gboth' phase"):
        config_lib.resolve(get('stylegan2', 'preset=ffhq1024', G_reg_interval=0), num_devices=8)
    with pytest.raises(NotImplementedError, match=r"config\.D_reg_interval \(0\): R1 \(gamma 10.0\).*'Dboth'"):
        config_lib.resolve(get('stylegan2', 'preset=ffhq1024', D_reg_interval=0), num_devices=8)
    # A reg phase whose weight is 0 computes nothing (official): omitted, the lr still adjusted for its interval.
    run = config_lib.resolve(get('stylegan2', 'preset=ffhq1024', pl_weight=0.0), num_devices=8)
    assert run.phases == (('Gmain', 1), ('Dmain', 1), ('Dreg', 16), ('ema', 1))
    assert math.isclose(run.G_opt_kwargs.lr, 0.002 * 4 / 5)


def test_resolve_network_configs_and_options():
    config = get('stylegan3-t', 'tiny,cond', fp32=True)
    run = config_lib.resolve(config, num_devices=2, c_dim=10)
    g, d = presets.network_configs('stylegan3-t', img_resolution=16, c_dim=10, batch_size=8, cbase=1024, cmax=32,
                                   map_depth=2, mbstd_group=4, fp32=True, z_dim=32, w_dim=32)
    assert run.G_kwargs.to_dict() == g and run.D_kwargs.to_dict() == d
    assert run.G_kwargs.conv_clamp is None and run.G_kwargs.num_fp16_res == 0
    assert config_lib.resolve(get('stylegan3-t', 'tiny'), 2, c_dim=10).c_dim == 0    # labels only with cond (official)
    run = config_lib.resolve(get('stylegan3-r', 'tiny', resume='/runs/x.pkl'), num_devices=1)
    assert run.ema_rampup is None and run.loss_kwargs.blur_init_sigma == 0   # official --resume
    with pytest.raises(ValueError, match='config.cond=True requires a dataset with labels'):
        config_lib.resolve(config, num_devices=2, c_dim=0)
    assert isinstance(run, config_dict.FrozenConfigDict)

#----------------------------------------------------------------------------
# Presets: docs/configs.md.

DOCS = [  # (preset, cfg, resolution, batch, gamma, mirror, aug, other fields)
    ('ffhq1024', 'stylegan3-t', 1024, 32, 32.8, True, 'noaug', {}),
    ('ffhq1024', 'stylegan3-r', 1024, 32, 32.8, True, 'noaug', {}),
    ('ffhq1024', 'stylegan2', 1024, 32, 10.0, True, 'noaug', {}),
    ('ffhqu256', 'stylegan3-t', 256, 64, 1.0, True, 'noaug', dict(cbase=16384, dlr=0.0025)),
    ('ffhqu256', 'stylegan3-r', 256, 64, 1.0, True, 'noaug', dict(cbase=16384, dlr=0.0025)),
    ('ffhqu256', 'stylegan2', 256, 64, 1.0, True, 'noaug', dict(cbase=16384, glr=0.0025, dlr=0.0025,
                                                                mbstd_group=8)),
    ('afhqv2-512', 'stylegan3-t', 512, 32, 8.2, True, 'ada', {}),
    ('afhqv2-512', 'stylegan3-r', 512, 32, 16.4, True, 'ada', {}),
    ('afhqv2-512', 'stylegan2', 512, 32, 5.0, True, 'ada', {}),
    ('metfaces-1024', 'stylegan3-t', 1024, 32, 6.6, True, 'ada', dict(kimg=5000, snap=10)),
    ('metfaces-1024', 'stylegan3-r', 1024, 32, 3.3, True, 'ada', dict(kimg=5000, snap=10)),
    ('metfaces-1024', 'stylegan2', 1024, 32, 5.0, True, 'ada', dict(kimg=5000, snap=10)),
    ('metfacesu-1024', 'stylegan3-t', 1024, 32, 16.4, True, 'ada', dict(kimg=5000, snap=10)),
    ('metfacesu-1024', 'stylegan3-r', 1024, 32, 6.6, True, 'ada', dict(kimg=5000, snap=10)),
    ('paper256', 'stylegan2', 256, 64, 1.0, False, 'ada', dict(cbase=16384, glr=0.0025, dlr=0.0025,
                                                               mbstd_group=8)),
    ('paper512', 'stylegan2', 512, 64, 0.5, False, 'ada', dict(glr=0.0025, dlr=0.0025, mbstd_group=8)),
    ('paper1024', 'stylegan2', 1024, 32, 2.0, False, 'ada', {}),
]


@pytest.mark.parametrize('preset,cfg,res,batch,gamma,mirror,aug,other', DOCS, ids=lambda v: str(v))
def test_presets_match_docs_configs(preset, cfg, res, batch, gamma, mirror, aug, other):
    config = get(cfg, f'preset={preset}')
    assert (config.resolution, config.batch_size, config.gamma, config.mirror, config.aug) == \
        (res, batch, gamma, mirror, aug)
    for field, value in other.items():
        assert config[field] == value, field
    if preset.startswith('metfaces'):
        base = 'ffhqu' if preset == 'metfacesu-1024' else 'ffhq'
        assert config.resume.endswith(f'{cfg}-{base}-1024x1024.pkl')
    else:
        assert config.resume == ''


def test_recommended_gamma_matches_docs_tables():
    assert [config_lib.recommended_gamma('stylegan3-t', r, 32) for r in (128, 256, 512, 1024)] == [0.5, 2, 8, 32]
    assert math.isclose(config_lib.recommended_gamma('stylegan2', 1024, 32), 6.5536)
    assert math.isclose(config_lib.recommended_gamma('stylegan2', 256, 64), 0.2048)

#----------------------------------------------------------------------------
# Validation.

BAD = [  # (cfg, overrides, device count, exception, message)
    ('stylegan3-t', dict(resolution=48), 8, ValueError, r'config\.resolution \(48\) must be a power of two >= 8'),
    ('stylegan3-t', dict(resolution=4), 8, ValueError, r'config\.resolution \(4\)'),
    ('stylegan3-t', dict(batch_size=30), 8, ValueError,
     r'config\.batch_size \(30\) must be divisible by the device count \(8\)'),
    ('stylegan3-t', dict(batch_size=32, batch_gpu=8), 8, ValueError,
     r'config\.batch_size \(32\) must be divisible by the device count \(8\) times config\.batch_gpu \(8\)'),
    ('stylegan3-t', dict(batch_size=16, batch_gpu=2), 8, ValueError,
     r'config\.batch_gpu \(2\) cannot be smaller than config\.mbstd_group \(4\)'),
    ('stylegan3-t', dict(batch_size=16), 8, ValueError,
     r'config\.batch_gpu \(2 = 16 // 8 devices\) cannot be smaller than config\.mbstd_group \(4\)'),
    ('stylegan3-t', dict(batch_size=48, batch_gpu=6), 8, ValueError,
     r'config\.batch_gpu \(6\) must be a multiple of config\.mbstd_group \(4\)'),
    ('stylegan3-t', dict(gamma=-1.0), 8, ValueError, r'config\.gamma \(-1\.0\) must be a number >= 0'),
    ('stylegan3-t', dict(gamma=None), 8, ValueError,
     r'config\.gamma \(the R1 weight\) is required.* about 32 for stylegan3-t at 1024x1024'),
    ('stylegan3-t', dict(kimg=0.0), 8, ValueError, r'config\.kimg \(0\.0\) must be a number > 0'),
    ('stylegan3-t', dict(tick=-1.0), 8, ValueError, r'config\.tick'),
    ('stylegan3-t', dict(snap=0), 8, ValueError, r'config\.snap \(0\) must be an int >= 1'),
    ('stylegan3-t', dict(cfg='stylegan4'), 8, ValueError, r'config\.cfg must be one of'),
    ('stylegan3-t', dict(aug='strong'), 8, ValueError, r"config\.aug \('strong'\) must be one of"),
    ('stylegan3-t', dict(augpipe='bgcx'), 8, ValueError, r"config\.augpipe \('bgcx'\) must be one of"),
    ('stylegan3-t', dict(ada_kimg=0.0), 8, ValueError, r'config\.ada_kimg \(0\.0\) must be a number > 0'),
    ('stylegan3-t', dict(ada_interval=0), 8, ValueError, r'config\.ada_interval \(0\) must be an int >= 1'),
    ('stylegan3-t', dict(precision='float8'), 8, ValueError, r"config\.precision \('float8'\) must be one of"),
    ('stylegan3-t', dict(fp32=True, precision='bfloat16'), 8, ValueError, r"config\.fp32=True.*'float32'"),
    ('stylegan3-t', dict(nan_policy='ignore'), 8, ValueError, r"config\.nan_policy \('ignore'\) must be one of"),
    ('stylegan3-t', dict(p=1.5), 8, ValueError, r'config\.p \(1\.5\) must be a number >= 0 and <= 1'),
    ('stylegan3-t', dict(map_depth=0), 8, ValueError, r'config\.map_depth \(0\) must be an int >= 1'),
    ('stylegan3-t', dict(map_depth=None), 8, ValueError, r'config\.map_depth \(None\) must be an int >= 1'),
    ('stylegan2', dict(glr=None), 8, ValueError, r'config\.glr \(None\) must be a number >= 0'),
    ('stylegan2', dict(G_reg_interval=0), 8, NotImplementedError, r"config\.G_reg_interval \(0\).*'Gboth'"),
    ('stylegan3-t', dict(D_reg_interval=-1), 8, ValueError, r'config\.D_reg_interval'),
    ('stylegan3-t', dict(metrics='fid50k_full,fid51k'), 8, ValueError, r"config\.metrics .* unknown metric 'fid51k'"),
    ('stylegan2', dict(magnitude_ema_beta=0.9), 8, ValueError, r'config\.magnitude_ema_beta .* StyleGAN3 only'),
    ('stylegan3-t', dict(), 0, ValueError, r'the device count must be a positive int'),
    ('stylegan3-t', dict(remat=True, remat_policy='convs'), 8, ValueError,
     r"config\.remat_policy \('convs'\) must be one of \('inputs', 'masks', 'masks_and_convs'\)"),
    ('stylegan3-t', dict(remat_policy='masks'), 8, ValueError,
     r"config\.remat_policy \('masks'\) .* needs config\.remat=True"),
    ('stylegan2', dict(remat=True, remat_policy='masks_and_convs'), 8, ValueError,
     r"config\.remat_policy \('masks_and_convs'\) .* stylegan3-t/-r config"),
]


@pytest.mark.parametrize('cfg,overrides,devices,exc,match', BAD, ids=lambda v: str(v))
def test_validation_names_the_field(cfg, overrides, devices, exc, match):
    config = get(cfg, 'preset=ffhq1024,data=/data/ffhq', **overrides)
    with pytest.raises(exc, match=match):
        config_lib.validate(config, devices)
    with pytest.raises(exc, match=match):
        config_lib.resolve(config, devices)


def test_config_files_read_from_the_repository(monkeypatch, tmp_path):
    """The library reads configs/<cfg>.py (base_config, presets_of, get_config) as --config does; without the
    repository's configs/ directory it says where it looked. `replace` changes resolved fields and no others."""
    assert config_lib.base_config('stylegan2').to_dict() == load('stylegan2').get_config().to_dict()
    assert config_lib.presets_of('stylegan3-r') is load('stylegan3-r').PRESETS
    monkeypatch.setattr(config_lib, 'CONFIGS_DIR', tmp_path)
    config_lib.config_file.cache_clear()
    try:
        with pytest.raises(FileNotFoundError, match=f'{tmp_path}/stylegan2.py: no such config file.*pip install -e'):
            config_lib.get_config('stylegan2')
    finally:
        monkeypatch.undo()
        config_lib.config_file.cache_clear()
    run = config_lib.resolve(get('stylegan3-t', 'tiny'), num_devices=1)
    other = config_lib.replace(run, remat=True, G_kwargs={'z_dim': 8})
    assert other.remat and other.G_kwargs.to_dict() == {'z_dim': 8} and other.glr == run.glr and not run.remat
    with pytest.raises(KeyError, match=r"\['remmat'\] are not fields"):
        config_lib.replace(run, remmat=True)


def test_validation_data_and_fields():
    config = get('stylegan3-t', 'preset=ffhq1024')
    with pytest.raises(ValueError, match=r'config\.data is required'):
        config_lib.validate(config, 8)
    config_lib.validate(config, 8, require_data=False)                          # --dry_run
    config.data = '/data/ffhq'
    config_lib.validate(config, 8)
    config.batch_gpu = 4
    config_lib.validate(config, 1)                                              # 32 = 1 device * 4 * 8 rounds
    config.unlock()
    config.lr = 0.1
    with pytest.raises(ValueError, match=r"unknown \['lr'\]"):
        config_lib.validate(config, 8)
    for devices in (1, 2):
        config_lib.validate(get('stylegan3-r', 'tiny,data=x'), devices)
    with pytest.raises(ValueError, match=r'config\.batch_size \(8\) must be divisible .* times config\.batch_gpu'):
        config_lib.validate(get('stylegan3-r', 'tiny,data=x'), 8)


def test_resume_urls_are_refused_before_the_run():
    """The MetFaces presets name NVIDIA's download URL; sg3jax reads local files only, so validation refuses the
    URL with what to do, and a local path (read at step 0) passes, with resume_kimg."""
    config = get('stylegan3-t', 'preset=metfaces-1024,data=/data/metfaces')
    with pytest.raises(NotImplementedError, match=r"config\.resume \('https://api\.ngc\.nvidia\.com/.*/stylegan3-t-"
                                                  r"ffhq-1024x1024\.pkl'\): downloading is not implemented; download "
                                                  r"the file first \(e\.g\. wget\) and pass --config\.resume=LOCAL_PATH"):
        config_lib.validate(config, 8)
    config.resume, config.resume_kimg = '/models/stylegan3-t-ffhq-1024x1024.pkl', 5000.0
    config_lib.validate(config, 8)
    config.resume_kimg = -1.0
    with pytest.raises(ValueError, match='config.resume_kimg'):
        config_lib.validate(config, 8)

#----------------------------------------------------------------------------
# parse_arg.

def test_resume_changes_lists_what_a_restart_may_not_change():
    """A restarted run may change the schedule, logging, metrics, batch_gpu and the device count; a changed batch,
    learning rate, gamma, network or dataset label dimension is listed with both resolved values."""
    config = get('stylegan3-t', 'tiny,data=/data/x')
    saved = json.loads(json.dumps(config_lib.resolve(config, num_devices=2).to_dict(), default=str))
    free = get('stylegan3-t', 'tiny,data=/data/moved', kimg=5.0, tick=1.0, snap=3, metrics='fid50k_full',
               batch_gpu=4, keep_checkpoints=1, remat=True, remat_policy='masks')
    assert config_lib.resume_changes(saved, config_lib.resolve(free, num_devices=1)) == []
    changed = get('stylegan3-t', 'tiny,data=/data/x', batch_size=16, glr=0.001, gamma=2.0, cbase=2048)
    run = config_lib.resolve(changed, num_devices=2)
    # The values derived from the batch size (official train.py) are listed with it.
    assert config_lib.resume_changes(saved, run) == [
        ('batch_size', 8, 16), ('cbase', 1024, 2048), ('ema_kimg', 2.5, 5.0), ('gamma', 1.0, 2.0),
        ('glr', 0.0025, 0.001), ('magnitude_ema_beta', 0.5 ** (8 / 20000), 0.5 ** (16 / 20000))]
    cond = get('stylegan3-t', 'tiny,data=/data/x,cond')
    assert config_lib.resume_changes(saved, config_lib.resolve(cond, num_devices=2, c_dim=10)) == [('c_dim', 0, 10),
                                                                                 ('cond', False, True)]
    assert config_lib.resume_changes({}, run) == []                    # nothing recorded, nothing compared


def test_parse_arg():
    defaults = dict(res=0, preset='', tiny=False, scale=1.0, any=None)
    assert config_lib.parse_arg(None, **defaults) == defaults
    assert config_lib.parse_arg('', **defaults) == defaults
    got = config_lib.parse_arg('res=256, tiny,preset=ffhq1024,scale=2,any=1.5', **defaults)
    assert got == dict(res=256, preset='ffhq1024', tiny=True, scale=2.0, any=1.5)
    assert config_lib.parse_arg('tiny=false', **defaults)['tiny'] is False
    assert config_lib.parse_arg('preset=a=b', **defaults)['preset'] == 'a=b'
    assert config_lib.parse_arg('any=gs://bucket/x', **defaults)['any'] == 'gs://bucket/x'
    with pytest.raises(ValueError, match=r"unknown config argument 'variant'.*known: \['any', 'preset', 'res'"):
        config_lib.parse_arg('variant=B', **defaults)
    with pytest.raises(ValueError, match=r"config argument res='big' is not a int"):
        config_lib.parse_arg('res=big', **defaults)
    with pytest.raises(ValueError, match=r"config argument tiny='maybe' is not a bool"):
        config_lib.parse_arg('tiny=maybe', **defaults)
    with pytest.raises(ValueError, match=r"config argument 'res' needs a value"):
        config_lib.parse_arg('res', **defaults)

#----------------------------------------------------------------------------
# The tiny variant.

@pytest.mark.parametrize('cfg', config_lib.CFGS)
def test_tiny_networks_are_small(cfg):
    run = config_lib.resolve(get(cfg, 'tiny'), num_devices=2)
    count = lambda tree: sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))
    G_params, _ = jax.eval_shape(lambda k: generator.init(k, run.G_kwargs), jax.random.key(0))
    D_params, _ = jax.eval_shape(lambda k: discriminator.init(k, run.D_kwargs), jax.random.key(0))
    assert 10_000 < count(G_params) < 1_000_000 and count(D_params) < 1_000_000
    assert run.G_kwargs.img_resolution == 16 and run.G_kwargs.z_dim == 32
    assert run.kimg * 1000 / run.batch_size == 8                       # 8 steps
