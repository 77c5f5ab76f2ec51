"""The tiny generator and the cheap stand-ins for the feature networks of the metric tests (test_metrics_eq.py,
test_multihost.py and metrics_worker.py; not collected): pixel statistics through a fixed random matrix instead of
deep features, so a metric's plumbing runs end to end in seconds."""

import jax
import jax.numpy as jnp
import numpy as np

from sg3jax.metrics import detectors
from sg3jax.networks import generator, presets


def tiny_generator(cfg='stylegan3-t', c_dim=0):
    """(params, buffers, G_cfg) of a 16 px generator with 32 channels at most, z and w of 16, initialised from
    key 0."""
    g_cfg, _ = presets.network_configs(cfg, 16, c_dim=c_dim, cbase=512, cmax=32, z_dim=16, w_dim=16)
    params, buffers = generator.init(jax.random.key(0), g_cfg)
    return params, buffers, g_cfg


def fake_detectors():
    def inception_like(p, img, return_features=True, no_output_bias=False):
        x = img.astype(jnp.float32) / 255
        f = jnp.concatenate([x.mean((1, 2)), x.std((1, 2)), (x ** 2).mean((1, 2)), x[:, ::4, ::4].mean((1, 2))], -1)
        f = f @ p['w']
        return f if return_features else jax.nn.softmax(f, axis=1)

    def vgg_like(p, img, resize_images=True, return_lpips=False, return_features=False):
        x = img.astype(jnp.float32) / 255
        if return_lpips:
            return x.reshape(x.shape[0], -1)[:, ::7]
        return jnp.concatenate([x.mean((1, 2)), x.std((1, 2))], -1) @ p['w'][:6]

    w = {'w': jnp.asarray(np.random.default_rng(0).standard_normal((12, 12)), jnp.float32)}
    return {'inception': detectors.Detector('inception', w, 'fake-inception-v1', inception_like),
            'vgg16': detectors.Detector('vgg16', w, 'fake-vgg-v1', vgg_like)}
