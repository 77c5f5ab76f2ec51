"""Transfer learning (official --resume): a new run starts from another network's weights.

The source is an NVIDIA network pickle (read by sg3jax.legacy, no code from the file is run), an sg3jax run
(its directory, `checkpoints/` or one step), or an sg3jax sampling export (G_ema only). As the official
`misc.copy_params_and_buffers(require_all=False)`: every parameter and buffer of the new G, D and G_ema whose
name the source has is copied from it; what the source lacks keeps its initialisation; a name present in both
with another shape is an error naming it. Optimiser states are the new run's fresh ones, and so is ADA's p (the
config's initial p, as the official trainer). From an export, G and G_ema both start from its G_ema and D from
its initialisation; from a pickle with only one of G and G_ema, both start from that one.

Refused with one error naming both values: another architecture (StyleGAN2 into StyleGAN3 or back), another
resolution, or another label count, except an unconditional source into a conditional config: the tensors
whose shape depends on the labels (the G mapping's first layer, D's label mapping and output) then keep their
initialisation and the rest is copied.
"""

import os
import pathlib
import pickle

import jax
import numpy as np

from sg3jax import legacy
from sg3jax.networks.state_dicts import StateDictMismatch, flatten, unflatten
from sg3jax.networks import discriminator, generator
from sg3jax.sampling.export import restore_generator
from sg3jax.training import checkpoint as ckpt


class ResumeSourceError(ValueError):
    """A config.resume source that cannot be read or does not fit the config."""


def load_source(path) -> dict:
    """{'kind': 'pickle' | 'run' | 'export', 'G', 'G_ema': (params, buffers), 'D': params or None (an export),
    'G_cfg': the source's generator config}, arrays on the host."""
    path = pathlib.Path(os.path.expanduser(str(path))).absolute()
    if not path.exists():
        raise ResumeSourceError(f'config.resume {path}: no such file or directory')
    if path.is_file():
        try:
            data = legacy.load_network_pkl(path)
        except (legacy.NetworkPickleError, pickle.UnpicklingError, StateDictMismatch) as e:   # each names the file
            raise ResumeSourceError(f'config.resume: {e}') from e
        if 'G' not in data and 'G_ema' not in data:
            raise ResumeSourceError(f'config.resume {path}: the pickle holds no generator')
        gen = lambda k: (data[k]['params'], data[k]['buffers'])
        G, G_ema = gen('G' if 'G' in data else 'G_ema'), gen('G_ema' if 'G_ema' in data else 'G')
        return {'kind': 'pickle', 'G': G, 'G_ema': G_ema, 'D': data['D']['params'] if 'D' in data else None,
                'G_cfg': data['G_ema' if 'G_ema' in data else 'G']['cfg']}
    if (path / 'generator.json').is_file():
        params, buffers, G_cfg = restore_generator(path)
        G = jax.device_get((params, buffers))
        return {'kind': 'export', 'G': G, 'G_ema': G, 'D': None, 'G_cfg': G_cfg}
    try:
        state, meta, _ = ckpt.read_training_state(path)
    except FileNotFoundError as e:
        raise ResumeSourceError(f'config.resume {e} or a network pickle or sampling export') from None
    state = jax.device_get(state)
    G_cfg = meta.get('config', {}).get('G_kwargs')
    if G_cfg is None:
        raise ResumeSourceError(f'config.resume {path}: its checkpoint records no generator config')
    return {'kind': 'run', 'G': (state['G'], state['buffers']['G']), 'D': state['D'],
            'G_ema': (state['G_ema'], state['buffers']['G_ema']), 'G_cfg': G_cfg}


def _label_shaped(init, cfg):
    """Names of the leaves whose shape differs between `cfg` and the same network without labels."""
    abstract = lambda c: flatten(jax.eval_shape(lambda k: init(k, c), jax.random.key(0))[0])
    with_labels, without = abstract(cfg), abstract({**cfg, 'c_dim': 0})
    return {n for n, a in with_labels.items() if n not in without or without[n].shape != a.shape}


def _check_fit(where, G_cfg, target_G_cfg):
    src, dst = generator.spec(G_cfg), generator.spec(target_G_cfg)
    for what, a, b in (('architecture', src.arch, dst.arch),
                       ('resolution', src.img_resolution, dst.img_resolution)):
        if a != b:
            raise ResumeSourceError(f'config.resume {where}: its generator has {what} {a!r}, the config {b!r}; '
                                    f'fine-tuning needs the same {what}')
    if src.c_dim != dst.c_dim and src.c_dim != 0:
        raise ResumeSourceError(f'config.resume {where}: its generator has c_dim {src.c_dim}, the config '
                                f'{dst.c_dim} (the dataset\'s labels); only an unconditional source can start '
                                f'a conditional run')


def _copy(dst_tree, src_tree, where, allowed_mismatch):
    """dst_tree with every leaf the source has by name (cast to dst's dtype); (tree, copied names, kept names)."""
    dst, src = flatten(dst_tree), flatten(src_tree) if src_tree is not None else {}
    out, copied, kept = {}, [], []
    for name, leaf in dst.items():
        value = src.get(name)
        if value is not None and np.shape(value) != leaf.shape and name in allowed_mismatch:
            value = None
        if value is None:
            out[name] = leaf
            kept.append(name)
            continue
        if np.shape(value) != leaf.shape:
            raise ResumeSourceError(f'config.resume {where}.{name}: shape {tuple(np.shape(value))} in the source, '
                                    f'{tuple(leaf.shape)} in the config')
        out[name] = np.asarray(value).astype(leaf.dtype)
        copied.append(name)
    return unflatten(out, dst_tree), copied, kept


def apply_source(state, source, G_cfg, D_cfg, where, log=print):
    """The training state `state` (freshly initialised) with G, D, G_ema and their buffers copied from `source`
    (a `load_source` result); leaves are host arrays where copied (the caller places them)."""
    _check_fit(where, source['G_cfg'], G_cfg)
    unconditional_source = generator.spec(source['G_cfg']).c_dim == 0
    G_free = _label_shaped(generator.init, G_cfg) if unconditional_source and G_cfg['c_dim'] else set()
    D_free = _label_shaped(discriminator.init, D_cfg) if unconditional_source and D_cfg['c_dim'] else set()
    state = dict(state)
    buffers = dict(state['buffers'])
    report = []
    for name in ('G', 'G_ema'):
        params, buf = source[name]
        state[name], copied, kept = _copy(state[name], params, f'{where} {name}', G_free)
        buffers[name], copied_b, kept_b = _copy(buffers[name], buf, f'{where} {name} buffers', G_free)
        report.append((name, len(copied) + len(copied_b), kept + kept_b))
    state['D'], copied, kept = _copy(state['D'], source['D'], f'{where} D', D_free)
    report.append(('D', len(copied), kept))
    state['buffers'] = buffers
    for name, n, kept in report:
        left = (f'; left at their initialisation: {", ".join(kept)}' if kept and n else
                '; none copied (the source has no such network)' if kept else '')
        log(f'resume: {name}: {n} tensors from {where} ({source["kind"]}){left}')
    return state
