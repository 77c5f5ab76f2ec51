"""Building blocks shared by the StyleGAN2/3 networks: equalised-learning-rate FC and conv layers.

Parameters are stored *raw*, in the official layout and scale (`weight` [out, in] or [O, I, kh, kw]); the forward
pass multiplies them by the runtime gains (`weight_gain = lr_multiplier / sqrt(fan_in)`, `bias_gain =
lr_multiplier`). This is the equalised learning rate of ProGAN, and it keeps a one-to-one map to NVIDIA's
state_dict.
"""

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from sg3jax.ops import bias_act, conv2d_resample
from sg3jax.ops.bias_act import activation_funcs


def normalize_2nd_moment(x, axis=1, eps=1e-8):
    """x / sqrt(mean(x^2) + eps) along `axis` (official `normalize_2nd_moment`)."""
    return x * lax.rsqrt(jnp.mean(jnp.square(x), axis=axis, keepdims=True) + eps)


def lerp(a, b, t):
    """torch.lerp(a, b, t) = a + t * (b - a)."""
    return a + t * (b - a)

#----------------------------------------------------------------------------
# Fully connected layer.

def fc_init(key, in_features, out_features, bias=True, lr_multiplier=1.0, weight_init=1.0, bias_init=0.0):
    """Official FullyConnectedLayer init: weight ~ N(0, weight_init / lr_multiplier), bias = bias_init / lr_mult."""
    p = {'weight': jax.random.normal(key, (out_features, in_features), jnp.float32) * (weight_init / lr_multiplier)}
    if bias:
        b = np.broadcast_to(np.asarray(bias_init, np.float32), [out_features]) / np.float32(lr_multiplier)
        p['bias'] = jnp.asarray(b, jnp.float32)
    return p


def fc_apply(p, x, activation='linear', lr_multiplier=1.0):
    """y = act(x @ (W * lr/sqrt(in)).T + b * lr)."""
    in_features = p['weight'].shape[1]
    w = p['weight'].astype(x.dtype) * (lr_multiplier / np.sqrt(in_features))
    b = p.get('bias')
    if b is not None and lr_multiplier != 1:
        b = b * lr_multiplier                   # float32: bias_act casts it after broadcasting (broadcast_like)
    x = jnp.matmul(x, w.T, precision=lax.Precision.HIGHEST)
    return bias_act(x, b, dim=1, act=activation)

#----------------------------------------------------------------------------
# Conv2d layer (StyleGAN2 discriminator and resnet skips).

def conv_init(key, in_channels, out_channels, kernel_size, bias=True):
    p = {'weight': jax.random.normal(key, (out_channels, in_channels, kernel_size, kernel_size), jnp.float32)}
    if bias:
        p['bias'] = jnp.zeros([out_channels], jnp.float32)
    return p


def conv_apply(p, x, activation='linear', up=1, down=1, resample_filter=None, conv_clamp=None, gain=1.0,
               impl='fast'):
    """Official Conv2dLayer: conv2d_resample(W * 1/sqrt(fan_in)), then bias, activation, gain, clamp * gain.

    x is NHWC. Padding is kernel_size // 2; the weight is flipped (true convolution) when upsampling, as the
    official layer does ("slightly faster" there; it matters here only for which taps meet which pixels)."""
    o, i, k, _ = p['weight'].shape
    w = p['weight'] * (1 / np.sqrt(i * k * k))
    x = conv2d_resample(x, w.astype(x.dtype), f=resample_filter, up=up, down=down, padding=k // 2,
                        flip_weight=(up == 1), impl=impl)
    act_gain = activation_funcs[activation].def_gain * gain
    act_clamp = conv_clamp * gain if conv_clamp is not None else None
    return bias_act(x, p.get('bias'), dim=-1, act=activation, gain=act_gain, clamp=act_clamp)
