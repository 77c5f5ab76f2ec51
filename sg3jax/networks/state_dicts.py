"""Official `state_dict` <-> sg3jax (params, buffers), with strict key and shape checking.

Our pytrees use the official module names as nested dict keys, so the map is a flatten/unflatten on '.', plus the
config-derived filter buffers (`up_filter`, `down_filter`, `resample_filter`) which the official modules store and
we recompute: when loading they must be present and equal to ours (a mismatch means the config is not the one
the weights were trained with); when exporting they are written.

    params, buffers = from_state_dict(sd, cfg, kind='G')      # sd: {'mapping.fc0.weight': array, ...}
    sd = to_state_dict(params, buffers, cfg, kind='G')
"""

from typing import Dict, List, Tuple

import jax
import numpy as np

from sg3jax.networks import discriminator, generator
from sg3jax.networks import synthesis_sg3
from sg3jax.ops import setup_filter


class StateDictMismatch(ValueError):
    """A state_dict does not match the network a config describes; lists every offending key."""

    def __init__(self, what: str, missing: List[str], unexpected: List[str], mismatched: List[str]):
        self.missing, self.unexpected, self.mismatched = missing, unexpected, mismatched
        lines = [f'{what} does not match the config:']
        if missing:
            lines.append(f'  missing keys ({len(missing)}): {", ".join(missing)}')
        if unexpected:
            lines.append(f'  unexpected keys ({len(unexpected)}): {", ".join(unexpected)}')
        if mismatched:
            lines.append(f'  mismatched ({len(mismatched)}): {"; ".join(mismatched)}')
        super().__init__('\n'.join(lines))


def flatten(tree, prefix='') -> Dict[str, object]:
    """{'a': {'b': x}} -> {'a.b': x} (empty dicts vanish)."""
    out = {}
    for k, v in tree.items():
        key = f'{prefix}{k}'
        if isinstance(v, dict):
            out.update(flatten(v, key + '.'))
        else:
            out[key] = v
    return out


def unflatten(flat: Dict[str, object], template) -> dict:
    """Inverse of `flatten` following the nesting of `template` (so empty sub-dicts survive)."""
    def rec(t, prefix):
        return {k: (rec(v, f'{prefix}{k}.') if isinstance(v, dict) else flat[f'{prefix}{k}']) for k, v in t.items()}
    return rec(template, '')


def _abstract(kind, cfg):
    init = generator.init if kind == 'G' else discriminator.init
    return jax.eval_shape(lambda k: init(k, cfg), jax.random.key(0))


def derived_buffers(cfg, kind: str) -> Dict[str, np.ndarray]:
    """The official filter buffers implied by a config: key -> float32 array."""
    out = {}
    if kind == 'G':
        s = generator.spec(cfg)
        if s.arch == 'stylegan3':
            for layer in s.synthesis.layers:
                fu, fd = synthesis_sg3.layer_filters(layer)
                if fu is not None:
                    out[f'synthesis.{layer.name}.up_filter'] = fu
                if fd is not None:
                    out[f'synthesis.{layer.name}.down_filter'] = fd
            return out
        f = setup_filter(np.asarray(s.synthesis.resample_filter, np.float32))
        params, _ = _abstract('G', cfg)
        for blk, sub in params['synthesis'].items():
            out[f'synthesis.{blk}.resample_filter'] = f
            for name in ('conv0', 'conv1', 'skip'):
                if name in sub:
                    out[f'synthesis.{blk}.{name}.resample_filter'] = f
        return out
    s = discriminator.spec(cfg)
    f = setup_filter(np.asarray(s.resample_filter, np.float32))
    params, _ = _abstract('D', cfg)
    for blk, sub in params.items():
        if blk == 'mapping':
            continue
        if blk != 'b4':
            out[f'{blk}.resample_filter'] = f
        for name in ('fromrgb', 'conv0', 'conv1', 'skip', 'conv'):
            if name in sub:
                out[f'{blk}.{name}.resample_filter'] = f
    return out


def to_state_dict(params, buffers, cfg, kind: str = 'G') -> Dict[str, np.ndarray]:
    """Official state_dict (numpy float32) of our (params, buffers), filters included."""
    _check_kind(kind)
    sd = {k: np.asarray(v, np.float32) for k, v in flatten(params).items()}
    for k, v in flatten(buffers or {}).items():
        sd[k] = np.asarray(v, np.float32)
    sd.update(derived_buffers(cfg, kind))
    return sd


def from_state_dict(state_dict, cfg, kind: str = 'G', what: str = None) -> Tuple[dict, dict]:
    """(params, buffers) from an official state_dict; raises StateDictMismatch naming every bad key."""
    _check_kind(kind)
    what = what or f'{kind} state_dict'
    abs_params, abs_buffers = _abstract(kind, cfg)
    expected = {k: tuple(v.shape) for k, v in {**flatten(abs_params), **flatten(abs_buffers)}.items()}
    derived = derived_buffers(cfg, kind)
    expected.update({k: v.shape for k, v in derived.items()})
    given = {k: np.asarray(v) for k, v in state_dict.items()}

    missing = sorted(set(expected) - set(given))
    unexpected = sorted(set(given) - set(expected))
    mismatched = []
    for k in sorted(set(expected) & set(given)):
        if tuple(given[k].shape) != tuple(expected[k]):
            mismatched.append(f'{k}: shape {list(given[k].shape)}, expected {list(expected[k])}')
        elif k in derived:
            ref = derived[k]
            if np.max(np.abs(given[k].astype(np.float64) - ref)) > 1e-6 * max(np.max(np.abs(ref)), 1e-30):
                mismatched.append(f'{k}: filter values differ from the ones this config designs '
                                  f'(wrong resolution, radial or filter settings?)')
    if missing or unexpected or mismatched:
        raise StateDictMismatch(what, missing, unexpected, mismatched)

    to_jnp = lambda k: np.asarray(given[k], np.float32)
    params = unflatten({k: to_jnp(k) for k in flatten(abs_params)}, abs_params)
    buffers = unflatten({k: to_jnp(k) for k in flatten(abs_buffers)}, abs_buffers)
    return params, buffers


def _check_kind(kind):
    if kind not in ('G', 'D'):
        raise ValueError(f"kind must be 'G' or 'D', got {kind!r}")
