"""Mapping network z, c -> w (StyleGAN Section 2), shared by the StyleGAN2/3 generators and the conditional D.

One implementation covers both official classes: the StyleGAN3 mapping is the StyleGAN2 one with
`embed_features = layer_features = w_dim`, which are the StyleGAN2 defaults.
"""

from typing import Optional

import jax
import jax.numpy as jnp

from sg3jax.networks.layers import fc_apply, fc_init, lerp, normalize_2nd_moment


def mapping_init(key, z_dim, c_dim, w_dim, num_ws: Optional[int], num_layers=8, embed_features=None,
                 layer_features=None, lr_multiplier=0.01, w_avg_beta: Optional[float] = 0.998, **unused):
    """Returns (params, buffers). Buffers hold `w_avg` (zeros) when W is broadcast and tracked."""
    del unused
    if embed_features is None:
        embed_features = w_dim
    if c_dim == 0:
        embed_features = 0
    if layer_features is None:
        layer_features = w_dim
    features = [z_dim + embed_features] + [layer_features] * (num_layers - 1) + [w_dim]
    keys = jax.random.split(key, num_layers + 1)
    params = {}
    if c_dim > 0:
        params['embed'] = fc_init(keys[-1], c_dim, embed_features)
    for idx in range(num_layers):
        params[f'fc{idx}'] = fc_init(keys[idx], features[idx], features[idx + 1], lr_multiplier=lr_multiplier)
    buffers = {}
    if num_ws is not None and w_avg_beta is not None:
        buffers['w_avg'] = jnp.zeros([w_dim], jnp.float32)
    return params, buffers


def mapping_apply(params, buffers, z, c, *, z_dim, c_dim, num_ws: Optional[int], num_layers=8,
                  activation='lrelu', lr_multiplier=0.01, w_avg_beta: Optional[float] = 0.998,
                  truncation_psi=1.0, truncation_cutoff: Optional[int] = None, update_emas=False, **unused):
    """z [N, z_dim], c [N, c_dim] -> (ws [N, num_ws, w_dim] (or [N, w_dim] when num_ws is None), buffers).

    Steps: normalise z and the embedded c to unit second moment, concatenate, `num_layers` FC layers with
    lr-multiplier 0.01. With `update_emas` the running mean `w_avg` of the returned buffers moves toward the
    batch mean with decay `w_avg_beta`; without, the buffers are returned as given. Truncation lerps the first
    `truncation_cutoff` ws (all if None) toward `w_avg` by `truncation_psi`; psi and cutoff may be Python or
    traced values.
    """
    del unused
    x = None
    if z_dim > 0:
        if z.ndim != 2 or z.shape[1] != z_dim:
            raise ValueError(f'z must have shape [N, {z_dim}], got {z.shape}')
        x = normalize_2nd_moment(z.astype(jnp.float32))
    if c_dim > 0:
        if c is None or c.ndim != 2 or c.shape[1] != c_dim:
            raise ValueError(f'c must have shape [N, {c_dim}] (one-hot labels), got '
                             f'{None if c is None else c.shape}')
        y = normalize_2nd_moment(fc_apply(params['embed'], c.astype(jnp.float32)))
        x = jnp.concatenate([x, y], axis=1) if x is not None else y
    for idx in range(num_layers):
        x = fc_apply(params[f'fc{idx}'], x, activation=activation, lr_multiplier=lr_multiplier)

    new_buffers = buffers
    if update_emas and w_avg_beta is not None and 'w_avg' in buffers:
        w_avg = lerp(jnp.mean(jax.lax.stop_gradient(x), axis=0), buffers['w_avg'], w_avg_beta)
        new_buffers = {**buffers, 'w_avg': w_avg}

    if num_ws is not None:
        x = jnp.broadcast_to(x[:, None, :], (x.shape[0], num_ws, x.shape[1]))
    if not (isinstance(truncation_psi, (int, float)) and truncation_psi == 1):
        if 'w_avg' not in buffers:
            raise ValueError('truncation needs w_avg, which this mapping network does not track')
        w_avg = buffers['w_avg']  # the official code truncates toward the (already updated) buffer
        if update_emas:
            w_avg = new_buffers['w_avg']
        trunc = lerp(w_avg, x, truncation_psi)
        if num_ws is not None and truncation_cutoff is not None:
            mask = (jnp.arange(num_ws) < truncation_cutoff)[None, :, None]
            x = jnp.where(mask, trunc, x)
        else:
            x = trunc
    return x, new_buffers
