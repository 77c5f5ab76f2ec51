"""The training configuration: the fields every architecture shares, the values derived from them, and the checks.

Each `configs/<cfg>.py` is the config of one official `--cfg`: its differences from the shared fields (`ARCH`: the
official train.py settings of that --cfg) and its docs/configs.md rows (`PRESETS`), turned into a ConfigDict by
`make_config`. `ml_collections.config_flags.DEFINE_config_file` reads those files, so any field can be overridden
with `--config.FIELD=VALUE`. From code:

    config = get_config('stylegan3-t', 'preset=afhqv2-512')   # configs/stylegan3_t.py:preset=afhqv2-512
    validate(config, num_devices=8)              # one clear error naming the field, before anything compiles
    run = resolve(config, num_devices=8, c_dim=0)    # frozen copy with every derived value filled in

Values that the official `train.py` derives from other options (`ema_kimg` from the batch size, ...) are `None`
here, meaning "derive in `resolve`", so an override of `batch_size` moves them with it. Set them explicitly to
pin them.
"""

import ast
import functools
import importlib.util
import json
import pathlib
from typing import List, Optional, Tuple

from ml_collections import config_dict

from sg3jax.metrics.metric_main import is_valid_metric, list_valid_metrics
from sg3jax.networks import presets
from sg3jax.networks.synthesis_sg3 import REMAT_POLICIES as _REMAT_POLICIES
from sg3jax.training.augment import PRESETS as AUG_PRESETS

CFGS = presets.CFGS
AUGS = ('noaug', 'ada', 'fixed')
PRECISIONS = ('float32', 'bfloat16', 'float16')
NAN_POLICIES = ('stop', 'skip')
REMAT_POLICIES = tuple(_REMAT_POLICIES)     # ('inputs', 'masks', 'masks_and_convs')

# The config files, at the top of the repository (sg3jax is installed from a clone, `pip install -e .`).
CONFIGS_DIR = pathlib.Path(__file__).resolve().parents[2] / 'configs'
CONFIG_FILES = {'stylegan3-t': 'stylegan3_t.py', 'stylegan3-r': 'stylegan3_r.py', 'stylegan2': 'stylegan2.py'}

#----------------------------------------------------------------------------
# Fields and defaults.

def shared_config(cfg: str) -> config_dict.ConfigDict:
    """Every training option, with the defaults the official code gives every --cfg (train.py's command line,
    training_loop.py, StyleGAN2Loss); `configs/<cfg>.py` sets what differs. `None` (a typed placeholder, still
    settable with --config.FIELD=VALUE) means "derived in `resolve`" unless the field says "set by the config
    file"."""
    if cfg not in CFGS:
        raise ValueError(f'cfg must be one of {CFGS}, got {cfg!r}')
    ph = config_dict.placeholder
    c = config_dict.ConfigDict()

    # Dataset.
    c.cfg                = cfg          # Base configuration: 'stylegan3-t' | 'stylegan3-r' | 'stylegan2' (--cfg).
    c.data               = ''           # Dataset tool output (a path) or a TFDS name; '' only for --dry_run.
    c.data_dir           = ''           # TFDS data dir for a TFDS name; '' = TFDS default.
    c.resolution         = 256          # Image resolution: a power of two >= 8; must match the dataset.
    c.cond               = False        # Train a conditional model (dataset labels) [official default: False].
    c.mirror             = False        # Random x-flips of the dataset [official default: False].
    c.workers            = 3            # Data loading workers [official --workers default: 3].
    c.prefetch           = 2            # Batches prefetched per worker [official prefetch_factor: 2].

    # Batch.
    c.batch_size         = 32           # Total (global) batch size, official --batch (required there; 32 in docs).
    c.batch_gpu          = 0            # Per-device batch and the minibatch-std chunk; 0 = batch_size // devices.

    # Networks.
    c.cbase              = 32768        # Capacity multiplier (channel_base) [official default: 32768].
    c.cmax               = 512          # Max. feature maps (channel_max) [official default: 512].
    c.map_depth          = ph(int)      # Mapping network depth; set by the config file (official: 2, or 8 for SG2).
    c.mbstd_group        = 4            # Minibatch-std group size [official default: 4].
    c.freezed            = 0            # Freeze the first layers of D (Freeze-D) [official default: 0].
    c.z_dim              = 512          # Latent (z) dimensionality [official: 512].
    c.w_dim              = 512          # Intermediate latent (w) dimensionality [official: 512].
    c.magnitude_ema_beta = ph(float)    # StyleGAN3 only; None = 0.5 ** (batch_size / 20000): 20k-image half-life.

    # Precision.
    c.fp32               = False        # Disable mixed precision: also drops conv_clamp, as official --fp32.
    c.precision          = 'float32'    # Compute dtype of the num_fp16_res highest-resolution layers
                                        # ('float32' | 'bfloat16' | 'float16'); master weights stay float32.
    c.num_fp16_res       = 4            # How many highest resolutions use `precision` [official: 4, or 0 if --fp32].
    c.remat              = False        # Recompute each G layer/block and D block in the backward pass instead
                                        # of keeping its activations: ~1 more forward of compute, less memory
                                        # where they are large (StyleGAN2, D; README: Rematerialisation).
    c.remat_policy       = 'inputs'     # With remat, what each StyleGAN3 G layer keeps besides its input:
                                        # 'inputs' (nothing: all recomputed) | 'masks' (filtered_lrelu's 2-bit
                                        # masks: the conv recomputed, not the FIR chain) | 'masks_and_convs'
                                        # (the conv outputs too: only elementwise work recomputed).

    # Optimisation: Adam, betas (0, 0.99), eps 1e-8 (official train.py).
    c.glr                = ph(float)    # G learning rate; set by the config file (official: 0.0025, or 0.002 SG2).
    c.dlr                = 0.002        # D learning rate [official default: 0.002].
    c.G_reg_interval     = ph(int)      # Lazy regularisation of G every N minibatches; None/0 = off [official
                                        # training_loop.py: None; StyleGAN2 4].
    c.D_reg_interval     = 16           # Lazy regularisation of D every N minibatches [official: 16]; 0 = off.

    # Loss (official training/loss.py StyleGAN2Loss).
    c.gamma              = ph(float)    # R1 regularisation weight; required, as official --gamma (presets set it).
    c.style_mixing_prob  = 0.0          # Style mixing probability [official: 0; StyleGAN2 0.9].
    c.pl_weight          = 0.0          # Path length regularisation weight [official: 0; StyleGAN2 2].
    c.pl_batch_shrink    = 2            # Path length batch = batch / pl_batch_shrink [official: 2].
    c.pl_decay           = 0.01         # Decay of the path length running mean [official: 0.01].
    c.blur_init_sigma    = 0.0          # Initial D-input blur sigma [official: 0; StyleGAN3-R 10].
    c.blur_fade_kimg     = ph(float)    # Blur fade-out length; None = batch_size * 200 / 32 (if there is blur).

    # Generator EMA.
    c.ema_kimg           = ph(float)    # G_ema half-life in kimg; None = batch_size * 10 / 32.
    c.ema_rampup         = 0.05         # EMA ramp-up: half-life <= nimg * ema_rampup [official: 0.05].

    # Augmentation (Karras et al. 2020, "Training GANs with Limited Data"; sg3jax.training.augment).
    c.aug                = 'ada'        # 'noaug' | 'ada' (adaptive p) | 'fixed' (p = config.p) [official: 'ada'].
    c.p                  = 0.2          # Augmentation probability for aug='fixed' [official: 0.2].
    c.target             = 0.6          # ADA target value of E[sign(D(real))] for aug='ada' [official: 0.6].
    c.augpipe            = 'bgc'        # Augmentation ops: a preset of sg3jax.training.augment.PRESETS [official
                                        # StyleGAN3: always 'bgc'; StyleGAN2-ADA's --augpipe].
    c.ada_interval       = 4            # Adjust p every N minibatches [official: 4].
    c.ada_kimg           = 500.0        # p can move from 0 to 1 in this many kimg [official: 500].

    # Schedule, logging, checkpoints.
    c.kimg               = 25000.0      # Total training length in thousands of real images [official: 25000].
    c.tick               = 4.0          # Progress line and stats every N kimg [official: 4].
    c.snap               = 50           # Checkpoint (and image snapshot) every N ticks [official: 50].
    c.seed               = 0            # Random seed [official: 0].
    c.resume             = ''           # Start from these weights (transfer learning; official --resume): an
                                        # NVIDIA .pkl, an sg3jax run directory or checkpoint, or a sampling
                                        # export (training/transfer.py); '' = none. Read at step 0 only: an
                                        # interrupted run resumes from --workdir by itself.
    c.resume_kimg        = 0.0          # The kimg a fine-tuning run starts counting from [official: 0].
    c.keep_checkpoints   = 5            # Checkpoints kept in --workdir (the latest N).
    c.nan_policy         = 'stop'       # Non-finite loss: 'stop' the run, or 'skip' that update.
    c.metrics            = ''           # Quality metrics at every snapshot, comma separated, e.g.
                                        # 'fid50k_full,eqt50k_int' (sg3jax.metrics) [official: fid50k_full;
                                        # here none by default: FID/KID/PR/IS/PPL need the converted Inception/
                                        # VGG16 weights, see calc_metrics]. '' or 'none' = no metrics.
    c.detector_dir       = ''           # Converted feature-network weights for the metrics; '' = $SG3JAX_DETECTORS.
    c.metrics_cache_dir  = ''           # Dataset feature statistics cache; '' = WORKDIR/../.metrics-cache.
    return c

#----------------------------------------------------------------------------
# The config files.

@functools.lru_cache(maxsize=None)
def config_file(cfg: str):
    """The module `configs/<cfg>.py` (its ARCH, PRESETS and get_config), read once."""
    if cfg not in CFGS:
        raise ValueError(f'cfg must be one of {CFGS}, got {cfg!r}')
    path = CONFIGS_DIR / CONFIG_FILES[cfg]
    if not path.is_file():
        raise FileNotFoundError(f'{path}: no such config file; the configs/ directory of the sg3jax repository '
                                'must be beside the package (install from a clone: pip install -e .)')
    spec = importlib.util.spec_from_file_location(f'sg3jax_configs_{cfg.replace("-", "_")}', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def base_config(cfg: str) -> config_dict.ConfigDict:
    """Every training option of `--cfg` with its official defaults: configs/<cfg>.py without arguments."""
    return config_file(cfg).get_config()


def presets_of(cfg: str) -> dict:
    """{name: fields}: the docs/configs.md rows of `cfg` (its config file's PRESETS)."""
    return config_file(cfg).PRESETS


def get_config(cfg: str, arg: Optional[str] = None) -> config_dict.ConfigDict:
    """`configs/<cfg>.py:<arg>` from code, as --config reads it."""
    return config_file(cfg).get_config(arg)


def apply_preset(config: config_dict.ConfigDict, name: str, presets: dict) -> config_dict.ConfigDict:
    """Set the fields of row `name` of `presets` (a config file's PRESETS) in `config` (in place; returns it)."""
    if name not in presets:
        others = sorted(c for c in CFGS if c != config.cfg and name in presets_of(c))
        if others:
            raise ValueError(f'preset {name!r} has no {config.cfg} setting in docs/configs.md (it has {others}); '
                             f'presets for {config.cfg}: {sorted(presets)}')
        raise ValueError(f'unknown preset {name!r}; known presets for {config.cfg}: {sorted(presets)}')
    config.update(presets[name])
    return config


def apply_tiny(config: config_dict.ConfigDict) -> config_dict.ConfigDict:
    """Shrink everything for tests and smoke runs (in place): a G of about 0.15 M parameters whose forward pass at
    batch 8 takes tens of milliseconds on CPU, and a schedule of a few steps."""
    config.update(dict(
        resolution=16, batch_size=8, batch_gpu=4, mbstd_group=4,  # 1 or 2 devices; mbstd needs batch_gpu >= 4
        cbase=1024, cmax=32, map_depth=2, z_dim=32, w_dim=32,
        gamma=1.0,                        # large enough for R1 to show in a few-step test
        kimg=0.064, tick=0.016, snap=2,   # 8 steps of 8 images; a tick every 2 steps, a checkpoint every 4
        keep_checkpoints=2, workers=1, aug='noaug'))
    return config


def apply_quickstart(config: config_dict.ConfigDict) -> config_dict.ConfigDict:
    """The `python -m sg3jax.quickstart` run (in place): a class-conditional model of scikit-learn's 1,797
    handwritten digits at 16x16, small enough that a 2-core CPU shows recognisable digits in a few minutes.
    Learning rates are raised from the official 0.0025/0.002 (tuned for batch 32 at 256-1024 px and weeks of
    training) so progress is visible within a few kimg; R1 gamma 0.1 ~ the official heuristic for tiny images."""
    config.update(dict(
        resolution=16, cond=True, batch_size=32, batch_gpu=0, mbstd_group=4,
        cbase=2048, cmax=64, map_depth=2, z_dim=64, w_dim=64,
        glr=0.005, dlr=0.005, gamma=0.1, ema_kimg=1.0, aug='noaug',
        kimg=40.0, tick=1.0, snap=5, keep_checkpoints=2, workers=1))
    return config


def metric_names(metrics: str):
    """'fid50k_full, kid50k_full' -> ['fid50k_full', 'kid50k_full']; '' and 'none' -> [] (official --metrics)."""
    names = [m.strip() for m in metrics.split(',') if m.strip()]
    return [] if names == ['none'] else names


def recommended_gamma(cfg: str, resolution: int, batch_size: int) -> float:
    """The R1 weight docs/configs.md suggests, used in the message when `gamma` is missing. StyleGAN3: its
    recommended tables (0.5, 2, 8, 32 at 128..1024 px), i.e. quadratic in resolution ("doubling the resolution
    means gamma should be multiplied by 4"). StyleGAN2: the StyleGAN2-ADA `--cfg=auto` heuristic that its
    "Default configuration" table lists, 0.0002 * resolution^2 / batch."""
    if cfg == 'stylegan2':
        return 0.0002 * resolution ** 2 / batch_size
    return 0.5 * (resolution / 128) ** 2

#----------------------------------------------------------------------------
# Checks.

def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def validate(config, num_devices: int, require_data: bool = True) -> None:
    """Raise one ValueError naming the first bad field and what it should be (NotImplementedError for features
    not implemented yet). Run it before anything compiles. `require_data=False` for --dry_run."""
    c = config
    if not _is_int(num_devices) or num_devices < 1:
        raise ValueError(f'the device count must be a positive int, got {num_devices!r}')
    if c.get('cfg') not in CFGS:
        raise ValueError(f'config.cfg must be one of {CFGS}, got {c.get("cfg")!r}')
    known = set(shared_config(c.cfg).keys())
    unknown, missing = sorted(set(c.keys()) - known), sorted(known - set(c.keys()))
    if unknown or missing:
        raise ValueError(f'config fields do not match shared_config({c.cfg!r}): unknown {unknown}, missing '
                         f'{missing}')

    def need(ok, field, expectation):
        if not ok:
            raise ValueError(f'config.{field} ({c[field]!r}) {expectation}')

    def int_at_least(field, lo):
        need(_is_int(c[field]) and c[field] >= lo, field, f'must be an int >= {lo}')

    def num_in(field, lo, hi=None, lo_open=False, optional=False):
        v = c[field]
        if optional and v is None:
            return
        ok = _is_num(v) and (v > lo if lo_open else v >= lo) and (hi is None or v <= hi)
        bound = f'> {lo}' if lo_open else f'>= {lo}'
        need(ok, field, f'must be a number {bound}' + (f' and <= {hi}' if hi is not None else ''))

    # Dataset.
    need(_is_int(c.resolution) and c.resolution >= 8 and not c.resolution & (c.resolution - 1), 'resolution',
         'must be a power of two >= 8 (the dataset resolution)')
    need(isinstance(c.data, str), 'data', 'must be a string')
    if require_data and not c.data:
        raise ValueError("config.data is required: a dataset made by the dataset tool, or a TFDS name "
                         "(only --dry_run may leave it '')")
    int_at_least('workers', 1)
    int_at_least('prefetch', 1)

    # Batch: the official sanity checks (train.py), with devices for GPUs.
    int_at_least('batch_size', 1)
    int_at_least('batch_gpu', 0)
    int_at_least('mbstd_group', 1)
    if c.batch_size % num_devices:
        raise ValueError(f'config.batch_size ({c.batch_size}) must be divisible by the device count ({num_devices})')
    batch_gpu = c.batch_gpu or c.batch_size // num_devices
    if c.batch_size % (num_devices * batch_gpu):
        raise ValueError(f'config.batch_size ({c.batch_size}) must be divisible by the device count '
                         f'({num_devices}) times config.batch_gpu ({batch_gpu})')
    if batch_gpu < c.mbstd_group:
        what = f'config.batch_gpu ({batch_gpu}' + ('' if c.batch_gpu else f' = {c.batch_size} // {num_devices} devices')
        raise ValueError(f'{what}) cannot be smaller than config.mbstd_group ({c.mbstd_group})')
    if batch_gpu % c.mbstd_group:
        # The official MinibatchStdLayer reshapes the per-GPU batch into groups: it must divide evenly.
        raise ValueError(f'config.batch_gpu ({batch_gpu}) must be a multiple of config.mbstd_group '
                         f'({c.mbstd_group})')

    # Networks and precision.
    int_at_least('cbase', 1)
    int_at_least('cmax', 1)
    int_at_least('map_depth', 1)
    int_at_least('freezed', 0)
    int_at_least('z_dim', 1)
    int_at_least('w_dim', 1)
    if c.cfg == 'stylegan2' and c.magnitude_ema_beta is not None:
        raise ValueError(f'config.magnitude_ema_beta ({c.magnitude_ema_beta}) applies to StyleGAN3 only; '
                         'leave it None for stylegan2')
    num_in('magnitude_ema_beta', 0, 1, optional=True)
    need(c.precision in PRECISIONS, 'precision', f'must be one of {PRECISIONS}')
    if c.fp32 and c.precision != 'float32':
        raise ValueError(f"config.fp32=True disables mixed precision: config.precision ({c.precision!r}) must "
                         "then be 'float32'")
    int_at_least('num_fp16_res', 0)
    need(isinstance(c.remat, bool), 'remat', 'must be True or False')
    need(c.remat_policy in REMAT_POLICIES, 'remat_policy', f'must be one of {REMAT_POLICIES}')
    if c.remat_policy != 'inputs' and not (c.remat and c.cfg != 'stylegan2'):
        raise ValueError(f'config.remat_policy ({c.remat_policy!r}) chooses what a rematerialised StyleGAN3 G '
                         'layer keeps: it needs config.remat=True and a stylegan3-t/-r config (StyleGAN2 blocks '
                         "and D blocks are recomputed whole); leave it 'inputs' otherwise")

    # Optimisation and loss.
    num_in('glr', 0)
    num_in('dlr', 0)
    for field in ('G_reg_interval', 'D_reg_interval'):
        if c[field] is not None:
            int_at_least(field, 0)
    if c.gamma is None:
        suggest = recommended_gamma(c.cfg, c.resolution, c.batch_size)
        raise ValueError(f'config.gamma (the R1 weight) is required, as the official --gamma: docs/configs.md '
                         f'suggests about {suggest:g} for {c.cfg} at {c.resolution}x{c.resolution}, batch '
                         f'{c.batch_size} (tune it per dataset); set --config.gamma=... or use a preset '
                         f'({sorted(presets_of(c.cfg))})')
    num_in('gamma', 0)
    num_in('style_mixing_prob', 0, 1)
    num_in('pl_weight', 0)
    int_at_least('pl_batch_shrink', 1)
    if c.pl_weight > 0 and batch_gpu // c.pl_batch_shrink < 1:
        raise ValueError(f'config.pl_batch_shrink ({c.pl_batch_shrink}) leaves no path-length samples of the '
                         f'per-device batch ({batch_gpu})')
    num_in('pl_decay', 0, 1)
    # Deferred: the official 'Gboth'/'Dboth' phases (regularisation in every main pass, without a lazy interval).
    if c.pl_weight > 0 and not c.G_reg_interval:
        raise NotImplementedError(f'config.G_reg_interval ({c.G_reg_interval}): path-length regularisation '
                                  f"(pl_weight {c.pl_weight}) in every G pass, the official 'Gboth' phase, is not "
                                  'implemented; set a lazy interval (official 4) or pl_weight=0')
    if c.gamma > 0 and not c.D_reg_interval:
        raise NotImplementedError(f'config.D_reg_interval ({c.D_reg_interval}): R1 (gamma {c.gamma}) in every D '
                                  "pass, the official 'Dboth' phase, is not implemented; set a lazy interval "
                                  '(official 16) or gamma=0')
    num_in('blur_init_sigma', 0)
    num_in('blur_fade_kimg', 0, optional=True)
    num_in('ema_kimg', 0, optional=True)
    num_in('ema_rampup', 0, optional=True)

    # Augmentation.
    need(c.aug in AUGS, 'aug', f'must be one of {AUGS}')
    num_in('p', 0, 1)
    num_in('target', 0, 1)
    need(c.augpipe in AUG_PRESETS, 'augpipe', f'must be one of {sorted(AUG_PRESETS)}')
    int_at_least('ada_interval', 1)
    num_in('ada_kimg', 0, lo_open=True)

    # Schedule and bookkeeping.
    num_in('kimg', 0, lo_open=True)
    num_in('tick', 0, lo_open=True)
    int_at_least('snap', 1)
    int_at_least('seed', 0)
    int_at_least('keep_checkpoints', 1)
    need(isinstance(c.resume, str), 'resume', 'must be a string (a path; empty for none)')
    if '://' in c.resume:
        # Downloading is deferred: the official trainer fetches URLs itself, ours reads local files only.
        raise NotImplementedError(f'config.resume ({c.resume!r}): downloading is not implemented; download the '
                                  f'file first (e.g. wget) and pass --config.resume=LOCAL_PATH')
    num_in('resume_kimg', 0)
    need(c.nan_policy in NAN_POLICIES, 'nan_policy', f'must be one of {NAN_POLICIES}')
    need(isinstance(c.metrics, str), 'metrics', "must be a comma-separated string of metric names, e.g. "
         "'fid50k_full,kid50k_full' ('' or 'none' for no metrics)")
    for name in metric_names(c.metrics):
        need(is_valid_metric(name), 'metrics', f'has unknown metric {name!r}; valid metrics: '
             f'{", ".join(list_valid_metrics())}')

#----------------------------------------------------------------------------
# Derived values.

def resolve(config, num_devices: int, c_dim: int = 0, img_channels: int = 3) -> config_dict.FrozenConfigDict:
    """A frozen copy of `config` (validated, data not required) with every derived value filled in, as the
    official train.py and training_loop.py derive them. `c_dim` and `img_channels` come from the dataset; the
    label dimension is used only with `cond=True` (official use_labels = --cond).

    Filled in place: batch_gpu, G_reg_interval/D_reg_interval (0 -> None), ema_kimg,
    ema_rampup, magnitude_ema_beta, blur_init_sigma, blur_fade_kimg. Added: num_devices, batch_per_device,
    c_dim, img_channels, G_kwargs, D_kwargs (network configs), G_opt_kwargs, D_opt_kwargs (Adam, lazy-reg
    adjusted), phases ((name, interval) of the update phases the trainer runs), loss_kwargs (StyleGAN2Loss's).
    The update steps (`sg3jax.training.steps`) close over the result and read nothing else."""
    validate(config, num_devices, require_data=False)
    if not _is_int(c_dim) or c_dim < 0:
        raise ValueError(f'c_dim (the dataset label dimension) must be an int >= 0, got {c_dim!r}')
    if config.cond and c_dim == 0:
        raise ValueError('config.cond=True requires a dataset with labels (c_dim > 0), got c_dim=0')
    c = config_dict.ConfigDict(config.to_dict())    # plain values: detaches placeholders and references
    sg2 = c.cfg == 'stylegan2'
    batch = c.batch_size

    c.num_devices = num_devices
    c.batch_per_device = batch // num_devices
    c.batch_gpu = c.batch_gpu or c.batch_per_device
    c.c_dim = c_dim if c.cond else 0
    c.img_channels = img_channels
    c.G_reg_interval = c.G_reg_interval or None
    c.D_reg_interval = c.D_reg_interval or None

    # Batch-size-dependent hyperparameters (train.py).
    if c.ema_kimg is None:
        c.ema_kimg = batch * 10 / 32
    if c.magnitude_ema_beta is None and not sg2:
        c.magnitude_ema_beta = 0.5 ** (batch / (20 * 1e3))
    if c.resume:
        # Official --resume: no EMA ramp-up and no blur ramp-up when starting from trained weights.
        c.ema_rampup = None
        c.blur_init_sigma = 0.0
    if c.blur_fade_kimg is None:
        # Official: batch * 200 / 32 for StyleGAN3-R, the loss default 0 otherwise (where there is no blur).
        c.blur_fade_kimg = batch * 200 / 32 if c.blur_init_sigma > 0 else 0.0

    # Networks.
    G_kwargs, D_kwargs = presets.network_configs(
        c.cfg, img_resolution=c.resolution, img_channels=img_channels, c_dim=c.c_dim, batch_size=batch,
        cbase=c.cbase, cmax=c.cmax, map_depth=c.map_depth, mbstd_group=c.mbstd_group, freezed=c.freezed,
        fp32=c.fp32, z_dim=c.z_dim, w_dim=c.w_dim)
    if not sg2:
        G_kwargs['magnitude_ema_beta'] = c.magnitude_ema_beta
    G_kwargs['num_fp16_res'] = D_kwargs['num_fp16_res'] = 0 if c.fp32 else c.num_fp16_res
    c.G_kwargs, c.D_kwargs = G_kwargs, D_kwargs

    # Optimisers (training_loop.py). With lazy regularisation every I minibatches, the main and reg phases
    # share one Adam whose lr and betas are rescaled by mb_ratio = I / (I + 1). steps.make_optimizer reads these.
    for name, lr, interval in (('G', c.glr, c.G_reg_interval), ('D', c.dlr, c.D_reg_interval)):
        r = 1.0 if interval is None else interval / (interval + 1)
        c[f'{name}_opt_kwargs'] = dict(lr=lr * r, betas=(0.0 ** r, 0.99 ** r), eps=1e-8)

    # The phases the trainer compiles and runs: (name, every N minibatches), in the official order, then the G
    # EMA. Without a lazy interval the official loop runs 'Gboth'/'Dboth', main and reg in one pass; with no
    # weight to regularise with (validate refuses the rest) that is the main phase alone, named so here. A reg
    # phase whose weight is 0 computes nothing in the official loop (no gradients, no optimiser step): omitted.
    phases = [('Gmain', 1)]
    if c.G_reg_interval and c.pl_weight > 0:
        phases.append(('Greg', c.G_reg_interval))
    phases.append(('Dmain', 1))
    if c.D_reg_interval and c.gamma > 0:
        phases.append(('Dreg', c.D_reg_interval))
    c.phases = phases + [('ema', 1)]

    # The official StyleGAN2Loss kwargs, in its names (training/loss.py).
    c.loss_kwargs = dict(r1_gamma=c.gamma, style_mixing_prob=c.style_mixing_prob, pl_weight=c.pl_weight,
                         pl_batch_shrink=c.pl_batch_shrink, pl_decay=c.pl_decay,
                         blur_init_sigma=c.blur_init_sigma, blur_fade_kimg=c.blur_fade_kimg)
    return config_dict.FrozenConfigDict(c)


def network_kwargs(run) -> Tuple[dict, dict]:
    """(G config, D config) of a `resolve` result as plain dicts, in the JSON form checkpoints and exports store
    them in: what the network functions take."""
    form = stored_form(run)
    return form['G_kwargs'], form['D_kwargs']


def replace(run, **fields) -> config_dict.FrozenConfigDict:
    """A copy of `resolve` result `run` with `fields` set as given and nothing derived again (as
    dataclasses.replace): for tests and benchmarks that change one network setting, e.g.
    `replace(run, G_kwargs={**G_kwargs, 'num_layers': 4})`. To change an option, set it before `resolve`."""
    c = run.as_configdict()
    unknown = set(fields) - set(c.keys())
    if unknown:
        raise KeyError(f'replace: {sorted(unknown)} are not fields of the resolved config')
    for field, value in fields.items():
        c[field] = value
    return config_dict.FrozenConfigDict(c)

#----------------------------------------------------------------------------
# Resuming.

# What a run restarted in its workdir may change: where and how the data is read, the schedule, logging,
# checkpoints and metrics, and remat (the same values, other memory). Every other field changes the networks, the
# optimisation or the random stream, so a run resumed with it changed would not be the run its checkpoint holds.
RESUMABLE_FIELDS = frozenset({
    'data', 'data_dir', 'workers', 'prefetch', 'batch_gpu', 'remat', 'remat_policy', 'kimg', 'tick', 'snap',
    'keep_checkpoints', 'nan_policy', 'resume', 'resume_kimg', 'metrics', 'detector_dir', 'metrics_cache_dir'})


class ResumeConflict(ValueError):
    """A run restarted in its workdir with settings its checkpoint was not trained with (`resume_changes`)."""


def stored_form(run) -> dict:
    """A `resolve` result as plain JSON values (tuples as lists, other objects as strings): what a checkpoint
    stores as its config, and what `resume_changes` compares with it."""
    return json.loads(json.dumps(run.to_dict(), default=str))


def resume_changes(saved: dict, run) -> List[Tuple[str, object, object]]:
    """[(field, saved value, new value)]: the fields outside RESUMABLE_FIELDS whose resolved value in `run` (a
    `resolve` result) differs from `saved` (the resolved config a checkpoint stores), plus the dataset's c_dim
    and img_channels. Values are compared in the JSON form the checkpoint stores them in; a field the saved config
    does not have is not compared. The device count is free to change: the global batch is what the config
    fixes."""
    new = stored_form(run)
    fields = (set(shared_config(run.cfg).keys()) | {'c_dim', 'img_channels'}) - RESUMABLE_FIELDS
    return [(k, saved[k], new[k]) for k in sorted(fields) if k in saved and saved[k] != new[k]]

#----------------------------------------------------------------------------
# The `get_config(arg)` string.

_TRUE, _FALSE = ('1', 'true', 'yes', 'on'), ('0', 'false', 'no', 'off')


def make_config(cfg: str, arg: Optional[str], arch: dict, presets: dict) -> config_dict.ConfigDict:
    """The body of every `configs/<cfg>.py:get_config(arg)`: the shared fields, the file's `arch` settings, then
    the arguments preset=NAME (a row of `presets`), quickstart, tiny, res=INT, data=PATH_OR_TFDS_NAME, cond,
    mirror (applied in that order)."""
    arg = parse_arg(arg, preset='', res=0, data='', cond=False, mirror=False, tiny=False, quickstart=False)
    config = shared_config(cfg)
    config.update(arch)
    if arg['preset']:
        apply_preset(config, arg['preset'], presets)
    if arg['quickstart']:
        apply_quickstart(config)
    if arg['tiny']:
        apply_tiny(config)
    if arg['res']:
        config.resolution = arg['res']
    if arg['data']:
        config.data = arg['data']
    config.cond = config.cond or arg['cond']
    config.mirror = config.mirror or arg['mirror']
    return config


def _parse_value(key, text, default):
    """`text` as the type of `default` (bool, int, float, str); a None default takes a Python literal or text."""
    try:
        if isinstance(default, bool):
            if text.lower() in _TRUE + _FALSE:
                return text.lower() in _TRUE
            raise ValueError
        if isinstance(default, int):
            return int(text)
        if isinstance(default, float):
            return float(text)
        if isinstance(default, str):
            return text
    except ValueError:
        raise ValueError(f'config argument {key}={text!r} is not a {type(default).__name__}') from None
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def parse_arg(arg: Optional[str], **defaults) -> dict:
    """Parse the `get_config(arg)` string, "k=v,flag,...", into {key: value} over `defaults` (as big_vision's
    parse_arg): a bare `flag` means flag=True; values take the type of their default; unknown keys raise,
    listing the known ones. Values cannot contain commas."""
    out = dict(defaults)
    for item in (arg or '').split(','):
        item = item.strip()
        if not item:
            continue
        key, has_value, text = item.partition('=')
        key = key.strip()
        if key not in defaults:
            raise ValueError(f'unknown config argument {key!r} in {arg!r}; known: {sorted(defaults)}')
        if not has_value:
            if not isinstance(defaults[key], bool):
                raise ValueError(f'config argument {key!r} needs a value ({key}=...)')
            out[key] = True
        else:
            out[key] = _parse_value(key, text.strip(), defaults[key])
    return out
