"""StyleGAN2Loss (the official training/loss.py) as pure functions, one per training phase.

    Gmain: softplus(-D(G(z, c)))                       non-saturating logistic loss (Goodfellow et al. 2014)
    Greg:  path-length penalty (StyleGAN2, Section 3.2), StyleGAN2 config only
    Dmain: softplus(D(G(z, c))) + softplus(-D(x))      with G's buffers (w_avg, magnitude_ema) updated in this pass
    Dreg:  R1 = |grad_x D(x)|^2 * gamma / 2            (Mescheder et al. 2018), lazily every 16 minibatches

Every function returns (scalar loss to differentiate, aux dict of per-sample values and updated state). Phase
gains (lazy regularisation multiplies the reg loss by its interval) are applied by the caller, as in the official
`accumulate_gradients(..., gain)`.
"""

from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from sg3jax.networks import discriminator, generator


def blur_sigma_at(cur_nimg, blur_init_sigma: float, blur_fade_kimg: float):
    """Linear fade of the D-input blur: sigma_init * max(1 - nimg / (fade_kimg * 1000), 0) (0 if no fade)."""
    if blur_fade_kimg <= 0 or blur_init_sigma <= 0:
        return jnp.float32(0)
    return jnp.maximum(1 - jnp.asarray(cur_nimg, jnp.float32) / (blur_fade_kimg * 1e3), 0) * blur_init_sigma


def blur(img, sigma, max_sigma: float):
    """The official D-input Gaussian blur with a traced sigma: taps k in [-floor(3 sigma), floor(3 sigma)],
    f = 2^-(k/sigma)^2 normalised, applied separably with zero padding (filter2d). The tap array has the fixed
    length of `max_sigma`, with the taps beyond floor(3 sigma) set to zero, which is the same filter; so the fade
    over training never recompiles. sigma <= 0 (or < 1/3, where floor(3 sigma) = 0) is the identity."""
    half = int(np.floor(max_sigma * 3))
    if half <= 0:
        return img
    k = jnp.arange(-half, half + 1, dtype=jnp.float32)
    size = jnp.floor(sigma * 3)
    safe = jnp.where(sigma > 0, sigma, 1.0)
    f = jnp.where(jnp.abs(k) <= size, jnp.exp2(-jnp.square(k / safe)), 0.0)
    f = f / jnp.sum(f)                                        # size == 0 -> a delta: identity
    # filter2d with a symmetric filter: correlation == convolution; pad `half` on both sides of each axis.
    n, h, w, c = img.shape
    x = jnp.pad(img, ((0, 0), (0, 0), (half, half), (0, 0)))
    x = sum(f[i] * lax.slice_in_dim(x, i, i + w, axis=2) for i in range(2 * half + 1))
    x = jnp.pad(x, ((0, 0), (half, half), (0, 0), (0, 0)))
    x = sum(f[i] * lax.slice_in_dim(x, i, i + h, axis=1) for i in range(2 * half + 1))
    return x


def _mix_styles(ws, G_params, G_buffers, z, c, G_cfg, key, prob):
    """Style mixing regularisation: with probability `prob`, ws[:, cutoff:] come from a second z, with
    cutoff ~ U{1, ..., num_ws - 1} (one cutoff for the whole batch, as the official run_G)."""
    if prob <= 0:
        return ws
    k_z, k_cut, k_prob = jax.random.split(key, 3)
    num_ws = ws.shape[1]
    cutoff = jax.random.randint(k_cut, (), 1, num_ws)
    cutoff = jnp.where(jax.random.uniform(k_prob, ()) < prob, cutoff, num_ws)
    ws2 = generator.mapping(G_params, G_buffers, jax.random.normal(k_z, z.shape), c, G_cfg)
    return jnp.where((jnp.arange(num_ws) >= cutoff)[None, :, None], ws2, ws)


def _synthesize(G_params, G_buffers, ws, G_cfg, key, fused_modconv, update_emas=False, mixed_dtype=None,
                remat=False):
    """(img, G_buffers) of synthesis as in training, the buffers updated when `update_emas`: StyleGAN2 draws
    random noise (const without a key); StyleGAN3 has none."""
    kwargs = dict(mixed_dtype=mixed_dtype, remat=remat)
    if generator.spec(G_cfg).arch == 'stylegan2':
        kwargs.update(noise_mode='random' if key is not None else 'const', noise_key=key,
                      fused_modconv=fused_modconv)
    if update_emas:
        return generator.synthesis_update_emas(G_params, G_buffers, ws, G_cfg, **kwargs)
    return generator.synthesis(G_params, G_buffers, ws, G_cfg, **kwargs), G_buffers


def run_G(G_params, G_buffers, z, c, G_cfg, *, update_emas=False, style_mixing_prob=0.0, key=None,
          fused_modconv=None, mixed_dtype=None, remat=False):
    """G(z, c) as the official StyleGAN2Loss.run_G. Returns (img, ws, G_buffers), the buffers updated when
    `update_emas` (w_avg in the mapping, magnitude_ema in the synthesis). `mixed_dtype`, `remat`: see
    generator.synthesis."""
    k_mix, k_noise = jax.random.split(key) if key is not None else (None, None)
    if update_emas:
        ws, G_buffers = generator.mapping_update_emas(G_params, G_buffers, z, c, G_cfg)
    else:
        ws = generator.mapping(G_params, G_buffers, z, c, G_cfg)
    ws = _mix_styles(ws, G_params, G_buffers, z, c, G_cfg, k_mix, style_mixing_prob)
    img, G_buffers = _synthesize(G_params, G_buffers, ws, G_cfg, k_noise, fused_modconv, update_emas, mixed_dtype,
                                 remat)
    return img, ws, G_buffers


def run_D(D_params, img, c, D_cfg, *, blur_sigma=0.0, max_blur_sigma=0.0, augment: Optional[Callable] = None,
          mbstd_fn=None, mixed_dtype=None, remat=False):
    """D(augment(blur(img)), c), as the official StyleGAN2Loss.run_D (blur first, then the augment pipe)."""
    img = blur(img, blur_sigma, max_blur_sigma)
    if augment is not None:
        img = augment(img)
    return discriminator.apply(D_params, img, c, D_cfg, mbstd_fn=mbstd_fn, mixed_dtype=mixed_dtype, remat=remat)

#----------------------------------------------------------------------------

def loss_Gmain(G_params, G_buffers, D_params, z, c, G_cfg, D_cfg, *, key=None, style_mixing_prob=0.0,
               blur_sigma=0.0, max_blur_sigma=0.0, augment=None, mbstd_fn=None, fused_modconv=None,
               mixed_dtype=None,
               remat=False):
    """mean(softplus(-D(G(z, c)))): maximise the logits of generated images."""
    img, _, _ = run_G(G_params, G_buffers, z, c, G_cfg, key=key, style_mixing_prob=style_mixing_prob,
                      fused_modconv=fused_modconv, mixed_dtype=mixed_dtype, remat=remat)
    # The augmentation draws from its own stream, so G's draws do not depend on whether augmentation is on.
    aug = None if augment is None else (lambda x: augment(x, jax.random.fold_in(key, 1)))
    logits = run_D(D_params, img, c, D_cfg, blur_sigma=blur_sigma, max_blur_sigma=max_blur_sigma,
                   augment=aug, mbstd_fn=mbstd_fn, mixed_dtype=mixed_dtype, remat=remat)
    loss = jax.nn.softplus(-logits)                           # -log(sigmoid(logits))
    return jnp.mean(loss), {'scores_fake': logits, 'loss_G': loss}


def loss_Gpl(G_params, G_buffers, pl_mean, z, c, G_cfg, *, key, pl_batch_shrink=2, pl_decay=0.01,
             pl_weight=2.0, style_mixing_prob=0.0, fused_modconv=None, mixed_dtype=None,
             remat=False):
    """Path-length regularisation (StyleGAN2 Section 3.2): penalty (|J_w^T y| - a)^2 with y ~ N(0, 1/(H W)) and a
    the running mean of the lengths (decay pl_decay), on the first batch/pl_batch_shrink samples. Returns
    (mean(penalty) * pl_weight, aux with the new pl_mean). (The official `pl_no_weight_grad` only skips a weight
    gradient kernel it does not need; XLA prunes that by itself.)"""
    k_mix, k_noise, k_pl = jax.random.split(key, 3)
    n = z.shape[0] // pl_batch_shrink
    z, c = z[:n], c[:n]
    ws = generator.mapping(G_params, G_buffers, z, c, G_cfg)
    ws = _mix_styles(ws, G_params, G_buffers, z, c, G_cfg, k_mix, style_mixing_prob)
    img, vjp = jax.vjp(lambda ws: _synthesize(G_params, G_buffers, ws, G_cfg, k_noise, fused_modconv,
                                              mixed_dtype=mixed_dtype, remat=remat)[0], ws)
    pl_noise = jax.random.normal(k_pl, img.shape) / np.sqrt(img.shape[1] * img.shape[2])
    (pl_grads,) = vjp(pl_noise)                               # d sum(img * noise) / d ws, differentiable
    pl_lengths = jnp.sqrt(jnp.mean(jnp.sum(jnp.square(pl_grads), axis=2), axis=1))
    # lerp toward the batch mean; as officially, the penalty uses the *undetached* new mean (the gradient flows
    # through it with weight pl_decay) while the stored running mean is detached.
    new_pl_mean = pl_mean + pl_decay * (jnp.mean(pl_lengths) - pl_mean)
    pl_penalty = jnp.square(pl_lengths - new_pl_mean)
    loss = pl_penalty * pl_weight
    return jnp.mean(loss), {'pl_penalty': pl_penalty, 'loss_Gpl': loss, 'pl_mean': lax.stop_gradient(new_pl_mean)}


def loss_Dmain(D_params, G_params, G_buffers, z, c, real_img, real_c, G_cfg, D_cfg, *, key=None,
               style_mixing_prob=0.0, blur_sigma=0.0, max_blur_sigma=0.0, augment=None, mbstd_fn=None,
               fused_modconv=None, mixed_dtype=None,
               remat=False):
    """mean(softplus(D(G(z, c)))) + mean(softplus(-D(real))). The G pass updates G's buffers (w_avg,
    magnitude_ema), as the official Dmain phase does; they are returned in aux['G_buffers']."""
    k_g, k_aug_fake, k_aug_real = (jax.random.split(key, 3) if key is not None else (None,) * 3)
    img, _, new_G_buffers = run_G(G_params, G_buffers, z, c, G_cfg, update_emas=True, key=k_g,
                                  style_mixing_prob=style_mixing_prob, fused_modconv=fused_modconv,
                                  mixed_dtype=mixed_dtype, remat=remat)
    img = lax.stop_gradient(img)
    fake_logits = run_D(D_params, img, c, D_cfg, blur_sigma=blur_sigma, max_blur_sigma=max_blur_sigma,
                        augment=None if augment is None else (lambda x: augment(x, k_aug_fake)),
                        mbstd_fn=mbstd_fn, mixed_dtype=mixed_dtype, remat=remat)
    real_logits = run_D(D_params, real_img, real_c, D_cfg, blur_sigma=blur_sigma, max_blur_sigma=max_blur_sigma,
                        augment=None if augment is None else (lambda x: augment(x, k_aug_real)),
                        mbstd_fn=mbstd_fn, mixed_dtype=mixed_dtype, remat=remat)
    loss_Dgen = jax.nn.softplus(fake_logits)                  # -log(1 - sigmoid(fake))
    loss_Dreal = jax.nn.softplus(-real_logits)                # -log(sigmoid(real))
    return jnp.mean(loss_Dgen) + jnp.mean(loss_Dreal), {
        'scores_fake': fake_logits, 'scores_real': real_logits, 'loss_Dgen': loss_Dgen, 'loss_Dreal': loss_Dreal,
        'G_buffers': new_G_buffers}


def loss_Dr1(D_params, real_img, real_c, D_cfg, *, r1_gamma, key=None, blur_sigma=0.0, max_blur_sigma=0.0,
             augment=None, mbstd_fn=None, mixed_dtype=None,
             remat=False):
    """R1: r1_penalty = |d sum(D(x)) / dx|^2 per sample, loss = r1_penalty * (gamma / 2), differentiated w.r.t.
    D (a double backward). The blur and augmentation run inside the graph, so the gradient sees them."""
    aug = None if augment is None else (lambda x: augment(x, key))

    def logits_sum(x):
        logits = run_D(D_params, x, real_c, D_cfg, blur_sigma=blur_sigma, max_blur_sigma=max_blur_sigma,
                       augment=aug, mbstd_fn=mbstd_fn, mixed_dtype=mixed_dtype, remat=remat)
        return jnp.sum(logits), logits
    r1_grads, real_logits = jax.grad(logits_sum, has_aux=True)(real_img)
    r1_penalty = jnp.sum(jnp.square(r1_grads), axis=(1, 2, 3))
    loss = r1_penalty * (r1_gamma / 2)
    return jnp.mean(loss), {'scores_real': real_logits, 'r1_penalty': r1_penalty, 'loss_Dr1': loss}
