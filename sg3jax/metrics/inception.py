"""Inception-v3 as in TensorFlow's `inception-2015-12-05` graph, the network behind FID, KID and IS.

NVIDIA's `inception-2015-12-05.pkl` (used by the official `metrics/frechet_inception_distance.py`) is a direct
TorchScript translation of that graph; this is the same computation in JAX, under the same parameter names
(the official `state_dict()` keys), so converted weights load one-to-one:

- input: images [N, H, W, 3] in [0, 255] (uint8 or float; NHWC here, NCHW officially);
- resize to 299x299 with TF1's legacy bilinear (`resample.tf1_resize_bilinear`; the TorchScript emulates it with
  affine_grid/grid_sample, bilinear, border padding), then (x - 128) / 128;
- every conv is conv (no bias) -> batch norm without scale, eps 1e-3 (`beta`, `mean`, `var`) -> ReLU;
- the graph's quirks (also documented by pytorch-fid's FIDInception*): average pools exclude padding
  (count_include_pad=False), the last block (`mixed_10`) max-pools its pool branch;
- `pool_3` (global 8x8 average) gives the 2048-d features of FID/KID; `output` (2048 -> 1008 logits, softmax)
  gives the class probabilities of IS, with the bias dropped for IS as the official `no_output_bias=True`.

Parameters are a flat dict {official name: array} with official layouts (conv [O, I, kh, kw], linear [out, in]).
"""

import numpy as np
import jax
import jax.numpy as jnp

from sg3jax.metrics.resample import tf1_resize_bilinear

BN_EPS = 1e-3
NUM_FEATURES = 2048
NUM_CLASSES = 1008
_HI = jax.lax.Precision.HIGHEST

#----------------------------------------------------------------------------
# Layers. `P` is a callable name -> {'weight', 'beta', 'mean', 'var'}; at init it creates them (see `init`).

def _conv(P, name, x, cout, k, stride=1, pad=(0, 0)):
    kh, kw = (k, k) if isinstance(k, int) else k
    p = P(name, x.shape[-1], cout, kh, kw)
    w = jnp.transpose(p['weight'], (2, 3, 1, 0))                     # [O,I,kh,kw] -> [kh,kw,I,O]
    y = jax.lax.conv_general_dilated(x, w, (stride, stride), [(pad[0], pad[0]), (pad[1], pad[1])],
                                     dimension_numbers=('NHWC', 'HWIO', 'NHWC'), precision=_HI)
    y = (y - p['mean']) * jax.lax.rsqrt(p['var'] + BN_EPS) + p['beta']
    return jax.nn.relu(y)


def _max_pool(x, k, stride, pad):
    return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, k, k, 1), (1, stride, stride, 1),
                                 [(0, 0), (pad, pad), (pad, pad), (0, 0)])


def _avg_pool_exclude_pad(x):  # 3x3, stride 1, pad 1, count_include_pad=False
    pads = [(0, 0), (1, 1), (1, 1), (0, 0)]
    s = jax.lax.reduce_window(x, 0.0, jax.lax.add, (1, 3, 3, 1), (1, 1, 1, 1), pads)
    n = jax.lax.reduce_window(jnp.ones(x.shape[1:3], x.dtype)[None, :, :, None], 0.0, jax.lax.add,
                              (1, 3, 3, 1), (1, 1, 1, 1), pads)
    return s / n


def _block_a(P, n, x, pool_features):
    a = _conv(P, f'{n}.conv', x, 64, 1)
    b = _conv(P, f'{n}.tower.conv', x, 48, 1)
    b = _conv(P, f'{n}.tower.conv_1', b, 64, 5, pad=(2, 2))
    c = _conv(P, f'{n}.tower_1.conv', x, 64, 1)
    c = _conv(P, f'{n}.tower_1.conv_1', c, 96, 3, pad=(1, 1))
    c = _conv(P, f'{n}.tower_1.conv_2', c, 96, 3, pad=(1, 1))
    d = _conv(P, f'{n}.tower_2.conv', _avg_pool_exclude_pad(x), pool_features, 1)
    return jnp.concatenate([a, b, c, d], axis=-1)


def _block_b(P, n, x):
    a = _conv(P, f'{n}.conv', x, 384, 3, stride=2)
    b = _conv(P, f'{n}.tower.conv', x, 64, 1)
    b = _conv(P, f'{n}.tower.conv_1', b, 96, 3, pad=(1, 1))
    b = _conv(P, f'{n}.tower.conv_2', b, 96, 3, stride=2)
    return jnp.concatenate([a, b, _max_pool(x, 3, 2, 0)], axis=-1)


def _block_c(P, n, x, c7):
    a = _conv(P, f'{n}.conv', x, 192, 1)
    b = _conv(P, f'{n}.tower.conv', x, c7, 1)
    b = _conv(P, f'{n}.tower.conv_1', b, c7, (1, 7), pad=(0, 3))
    b = _conv(P, f'{n}.tower.conv_2', b, 192, (7, 1), pad=(3, 0))
    c = _conv(P, f'{n}.tower_1.conv', x, c7, 1)
    c = _conv(P, f'{n}.tower_1.conv_1', c, c7, (7, 1), pad=(3, 0))
    c = _conv(P, f'{n}.tower_1.conv_2', c, c7, (1, 7), pad=(0, 3))
    c = _conv(P, f'{n}.tower_1.conv_3', c, c7, (7, 1), pad=(3, 0))
    c = _conv(P, f'{n}.tower_1.conv_4', c, 192, (1, 7), pad=(0, 3))
    d = _conv(P, f'{n}.tower_2.conv', _avg_pool_exclude_pad(x), 192, 1)
    return jnp.concatenate([a, b, c, d], axis=-1)


def _block_d(P, n, x):
    a = _conv(P, f'{n}.tower.conv', x, 192, 1)
    a = _conv(P, f'{n}.tower.conv_1', a, 320, 3, stride=2)
    b = _conv(P, f'{n}.tower_1.conv', x, 192, 1)
    b = _conv(P, f'{n}.tower_1.conv_1', b, 192, (1, 7), pad=(0, 3))
    b = _conv(P, f'{n}.tower_1.conv_2', b, 192, (7, 1), pad=(3, 0))
    b = _conv(P, f'{n}.tower_1.conv_3', b, 192, 3, stride=2)
    return jnp.concatenate([a, b, _max_pool(x, 3, 2, 0)], axis=-1)


def _block_e(P, n, x, pool):
    a = _conv(P, f'{n}.conv', x, 320, 1)
    t = _conv(P, f'{n}.tower.conv', x, 384, 1)
    t1 = _conv(P, f'{n}.tower.mixed.conv', t, 384, (1, 3), pad=(0, 1))
    t2 = _conv(P, f'{n}.tower.mixed.conv_1', t, 384, (3, 1), pad=(1, 0))
    u = _conv(P, f'{n}.tower_1.conv', x, 448, 1)
    u = _conv(P, f'{n}.tower_1.conv_1', u, 384, 3, pad=(1, 1))
    u1 = _conv(P, f'{n}.tower_1.mixed.conv', u, 384, (1, 3), pad=(0, 1))
    u2 = _conv(P, f'{n}.tower_1.mixed.conv_1', u, 384, (3, 1), pad=(1, 0))
    # The TF graph max-pools in the last block (mixed_10) and average-pools in mixed_9.
    p = _max_pool(x, 3, 1, 1) if pool == 'max' else _avg_pool_exclude_pad(x)
    d = _conv(P, f'{n}.tower_2.conv', p, 192, 1)
    return jnp.concatenate([a, t1, t2, u1, u2, d], axis=-1)


def _trunk(P, x):
    """x [N, 299, 299, 3] normalised -> pool_3 features [N, 2048]."""
    x = _conv(P, 'layers.conv', x, 32, 3, stride=2)
    x = _conv(P, 'layers.conv_1', x, 32, 3)
    x = _conv(P, 'layers.conv_2', x, 64, 3, pad=(1, 1))
    x = _max_pool(x, 3, 2, 0)
    x = _conv(P, 'layers.conv_3', x, 80, 1)
    x = _conv(P, 'layers.conv_4', x, 192, 3)
    x = _max_pool(x, 3, 2, 0)
    x = _block_a(P, 'layers.mixed', x, 32)
    x = _block_a(P, 'layers.mixed_1', x, 64)
    x = _block_a(P, 'layers.mixed_2', x, 64)
    x = _block_b(P, 'layers.mixed_3', x)
    x = _block_c(P, 'layers.mixed_4', x, 128)
    x = _block_c(P, 'layers.mixed_5', x, 160)
    x = _block_c(P, 'layers.mixed_6', x, 160)
    x = _block_c(P, 'layers.mixed_7', x, 192)
    x = _block_d(P, 'layers.mixed_8', x)
    x = _block_e(P, 'layers.mixed_9', x, 'avg')
    x = _block_e(P, 'layers.mixed_10', x, 'max')
    return jnp.mean(x, axis=(1, 2))                                  # pool_3: 8x8 average at 299 input

#----------------------------------------------------------------------------

def _conv_shapes():
    """{conv name: (cout, cin, kh, kw)} in forward order, traced once at 299x299."""
    shapes = {}

    def record(name, cin, cout, kh, kw):
        shapes[name] = (cout, cin, kh, kw)
        return dict(weight=jnp.zeros((cout, cin, kh, kw)), beta=jnp.zeros(cout), mean=jnp.zeros(cout),
                    var=jnp.ones(cout))

    jax.eval_shape(lambda x: _trunk(record, x), jax.ShapeDtypeStruct((1, 299, 299, 3), jnp.float32))
    return shapes


def param_shapes():
    """{official state_dict name: shape}, in the official module order."""
    out = {}
    for name, (cout, cin, kh, kw) in _conv_shapes().items():
        out[f'{name}.weight'] = (cout, cin, kh, kw)
        for k in ('beta', 'mean', 'var'):
            out[f'{name}.{k}'] = (cout,)
    out['output.weight'] = (NUM_CLASSES, NUM_FEATURES)
    out['output.bias'] = (NUM_CLASSES,)
    return out


def init(seed=0):
    """Random parameters of the exact architecture (tests; real weights come from `convert_feature_nets`).

    He-scaled weights and BN statistics near identity keep activations finite through the 94 convs."""
    rng = np.random.default_rng(seed)
    params = {}
    for name, shape in param_shapes().items():
        if name.endswith('.weight'):
            fan_in = int(np.prod(shape[1:]))
            v = rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)
        elif name.endswith('.var'):
            v = rng.uniform(0.5, 1.5, shape)
        elif name.endswith('.mean'):
            v = rng.standard_normal(shape) * 0.1
        else:
            v = rng.standard_normal(shape) * 0.1
        params[name] = jnp.asarray(v, jnp.float32)
    return params


def apply(params, images, return_features=True, no_output_bias=False):
    """images [N, H, W, 3] in [0, 255] -> pool_3 features [N, 2048], or softmax probabilities [N, 1008].

    `return_features=False` gives the official detector's softmax output; `no_output_bias=True` drops the
    output bias as the official IS does (to match Salimans et al.)."""
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f'inception.apply expects NHWC RGB images [N, H, W, 3], got shape {images.shape}')
    x = tf1_resize_bilinear(images.astype(jnp.float32), 299, 299)
    x = (x - 128) / 128
    features = _trunk(lambda name, *_: {k: params[f'{name}.{k}'] for k in ('weight', 'beta', 'mean', 'var')},
                      x)
    if return_features:
        return features
    logits = jnp.matmul(features, params['output.weight'].T, precision=_HI)
    if not no_output_bias:
        logits = logits + params['output.bias']
    return jax.nn.softmax(logits, axis=1)
