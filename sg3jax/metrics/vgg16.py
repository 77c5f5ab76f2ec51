"""VGG-16 with LPIPS weights, as NVIDIA's `vgg16.pkl` used by the official PR and PPL metrics.

That TorchScript module (Karras et al.'s port of the VGG-16 used by Zhang et al.'s LPIPS, with the learned LPIPS
channel weights) is called two ways by the official code:
- `return_features=True` (precision/recall, `metrics/precision_recall.py`): resize to 224x224 (TF1 legacy
  bilinear, as the inception network), the ImageNet-normalised VGG-16 up to fc2 + ReLU: 4096-d features;
- `resize_images=False, return_lpips=True` (PPL, `metrics/perceptual_path_length.py`): a vector per image whose
  squared Euclidean distance between two images is their LPIPS distance: for each of the five stages (relu1_2,
  relu2_2, relu3_3, relu4_3, relu5_3) the channel-unit-normalised features (norm + 1e-10), times
  sqrt(LPIPS weight / (H * W)), flattened and concatenated.
Input: images [N, H, W, 3] in [0, 255], NHWC. Parameters: flat dict {official name: array}: `layers.conv1..13`
(weight [O, I, 3, 3], bias), `layers.fc1..3` (weight [out, in], bias), `lpips0..4` (per-channel weights).

The input normalisation (x / 255 - ImageNet mean) / ImageNet std is the torchvision/LPIPS convention this
network was trained with; `convert_feature_nets` keeps the TorchScript's own source next to the weights
(`_torchscript_code` in the .npz) so it can be audited against this file.
"""

import numpy as np
import jax
import jax.numpy as jnp

from sg3jax.metrics.resample import tf1_resize_bilinear

NUM_FEATURES = 4096
_HI = jax.lax.Precision.HIGHEST
_CHANNELS = [64, 64, 'M', 128, 128, 'M', 256, 256, 256, 'M', 512, 512, 512, 'M', 512, 512, 512, 'M']
_LPIPS_AFTER = {2: 0, 4: 1, 7: 2, 10: 3, 13: 4}                      # conv index -> LPIPS stage
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)


def param_shapes():
    """{official state_dict name: shape}."""
    out, cin, i = {}, 3, 0
    for c in _CHANNELS:
        if c == 'M':
            continue
        i += 1
        out[f'layers.conv{i}.weight'] = (c, cin, 3, 3)
        out[f'layers.conv{i}.bias'] = (c,)
        cin = c
    for j, (fin, fout) in enumerate([(512 * 7 * 7, 4096), (4096, 4096), (4096, 1000)], 1):
        out[f'layers.fc{j}.weight'] = (fout, fin)
        out[f'layers.fc{j}.bias'] = (fout,)
    for j, c in enumerate([64, 128, 256, 512, 512]):
        out[f'lpips{j}'] = (c,)
    return out


def init(seed=0, dtype=jnp.float32):
    """Random parameters of the exact architecture (tests); He-scaled, positive LPIPS weights."""
    rng = np.random.default_rng(seed)
    params = {}
    for name, shape in param_shapes().items():
        if name.startswith('lpips'):
            v = rng.uniform(0, 1, shape)
        elif name.endswith('.weight'):
            v = rng.standard_normal(shape, dtype=np.float32) * np.float32(np.sqrt(2.0 / np.prod(shape[1:])))
        else:
            v = rng.standard_normal(shape) * 0.01
        params[name] = jnp.asarray(v, dtype)
    return params


def _conv(params, i, x):
    w = jnp.transpose(params[f'layers.conv{i}.weight'], (2, 3, 1, 0))  # [O,I,3,3] -> [3,3,I,O]
    y = jax.lax.conv_general_dilated(x, w, (1, 1), [(1, 1), (1, 1)], dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
                                     precision=_HI)
    return jax.nn.relu(y + params[f'layers.conv{i}.bias'])


def _linear(params, j, x):
    return jnp.matmul(x, params[f'layers.fc{j}.weight'].T, precision=_HI) + params[f'layers.fc{j}.bias']


def apply(params, images, resize_images=True, return_lpips=False, return_features=False):
    """images [N, H, W, 3] in [0, 255] -> LPIPS vectors [N, D] (`return_lpips`) or fc2 features [N, 4096]."""
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f'vgg16.apply expects NHWC RGB images [N, H, W, 3], got shape {images.shape}')
    if return_lpips == return_features:
        raise ValueError('vgg16.apply: pass exactly one of return_lpips=True or return_features=True')
    x = images.astype(jnp.float32)
    if resize_images:
        x = tf1_resize_bilinear(x, 224, 224)
    x = (x / 255 - IMAGENET_MEAN) / IMAGENET_STD
    lpips, i = [], 0
    for c in _CHANNELS:
        if c == 'M':
            x = jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), 'VALID')
            continue
        i += 1
        x = _conv(params, i, x)
        if return_lpips and i in _LPIPS_AFTER:
            n, h, w, _ = x.shape
            f = x / (jnp.sqrt(jnp.sum(jnp.square(x), axis=-1, keepdims=True)) + 1e-10)
            wgt = jnp.sqrt(jnp.maximum(params[f'lpips{_LPIPS_AFTER[i]}'].reshape(-1), 0) / (h * w))
            lpips.append((f * wgt).reshape(n, -1))
            if i == 13:
                return jnp.concatenate(lpips, axis=1)
    if x.shape[1:3] != (7, 7):
        raise ValueError(f'vgg16 features need 224x224 input (7x7 at pool5, got {x.shape[1:3]}); '
                         'use resize_images=True')
    x = jnp.transpose(x, (0, 3, 1, 2)).reshape(x.shape[0], -1)      # flatten in the official NCHW order
    x = jax.nn.relu(_linear(params, 1, x))
    return jax.nn.relu(_linear(params, 2, x))
