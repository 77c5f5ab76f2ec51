"""StyleGAN2Loss (the official training/loss.py): one pure method per training phase.

    Gmain: softplus(-D(G(z, c)))                       non-saturating logistic loss (Goodfellow et al. 2014)
    Greg:  path-length penalty (StyleGAN2, Section 3.2), StyleGAN2 config only
    Dmain: softplus(D(G(z, c))) + softplus(-D(x))      with G's buffers (w_avg, magnitude_ema) updated in this pass
    Dreg:  R1 = |grad_x D(x)|^2 * gamma / 2            (Mescheder et al. 2018), lazily every 16 minibatches

`StyleGAN2Loss` binds the official loss options and how the networks run once; each phase method returns (scalar
loss to differentiate, aux dict of per-sample values and updated state). Phase gains (lazy regularisation
multiplies the reg loss by its interval) are applied by the caller, as in the official
`accumulate_gradients(..., gain)`.
"""

import dataclasses
from typing import Any, Callable, Optional

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


@dataclasses.dataclass(frozen=True)
class StyleGAN2Loss:
    """The official StyleGAN2Loss with its options bound once (training/loss.py names and defaults), and how the
    networks run: `mbstd_fn` (discriminator.apply), `fused_modconv`, `mixed_dtype` and `remat`
    (generator.synthesis: False, True or a StyleGAN3 layer policy; D's blocks are recomputed whole when it is
    not False). `sg3jax.training.steps` builds one from the resolved config's `loss_kwargs`."""
    G_cfg: dict
    D_cfg: dict
    r1_gamma: Any = 10.0                # a float, or a traced scalar (one program for several weights)
    style_mixing_prob: float = 0.0
    pl_weight: float = 0.0
    pl_batch_shrink: int = 2            # read by the caller, which draws the path-length batch (pl_batch_size)
    pl_decay: float = 0.01
    blur_init_sigma: float = 0.0
    blur_fade_kimg: float = 0.0
    mbstd_fn: Optional[Callable] = None
    fused_modconv: Optional[bool] = None
    mixed_dtype: Any = None
    remat: Any = False

    def pl_batch_size(self, batch_size: int) -> int:
        """Samples of a minibatch the path-length penalty uses (official batch // pl_batch_shrink)."""
        return batch_size // self.pl_batch_shrink

    def blur_sigma(self, cur_nimg):
        return blur_sigma_at(cur_nimg, self.blur_init_sigma, self.blur_fade_kimg)

    def _mix_styles(self, ws, G_params, G_buffers, z, c, key):
        """Style mixing regularisation: with probability style_mixing_prob, ws[:, cutoff:] come from a second z,
        with cutoff ~ U{1, ..., num_ws - 1} (one cutoff for the whole batch, as the official run_G)."""
        if self.style_mixing_prob <= 0:
            return ws
        k_z, k_cut, k_prob = jax.random.split(key, 3)
        num_ws = ws.shape[1]
        cutoff = jax.random.randint(k_cut, (), 1, num_ws)
        cutoff = jnp.where(jax.random.uniform(k_prob, ()) < self.style_mixing_prob, cutoff, num_ws)
        ws2 = generator.mapping(G_params, G_buffers, jax.random.normal(k_z, z.shape), c, self.G_cfg)
        return jnp.where((jnp.arange(num_ws) >= cutoff)[None, :, None], ws2, ws)

    def _synthesize(self, G_params, G_buffers, ws, key, update_emas=False):
        """(img, G_buffers) of synthesis as in training, the buffers updated when `update_emas`: StyleGAN2 draws
        random noise (const without a key); StyleGAN3 has none."""
        kwargs = dict(mixed_dtype=self.mixed_dtype, remat=self.remat)
        if generator.spec(self.G_cfg).arch == 'stylegan2':
            kwargs.update(noise_mode='random' if key is not None else 'const', noise_key=key,
                          fused_modconv=self.fused_modconv)
        if update_emas:
            return generator.synthesis_update_emas(G_params, G_buffers, ws, self.G_cfg, **kwargs)
        return generator.synthesis(G_params, G_buffers, ws, self.G_cfg, **kwargs), G_buffers

    def run_G(self, G_params, G_buffers, z, c, *, key=None, update_emas=False):
        """G(z, c) as the official StyleGAN2Loss.run_G. Returns (img, ws, G_buffers), the buffers updated when
        `update_emas` (w_avg in the mapping, magnitude_ema in the synthesis)."""
        k_mix, k_noise = jax.random.split(key) if key is not None else (None, None)
        if update_emas:
            ws, G_buffers = generator.mapping_update_emas(G_params, G_buffers, z, c, self.G_cfg)
        else:
            ws = generator.mapping(G_params, G_buffers, z, c, self.G_cfg)
        ws = self._mix_styles(ws, G_params, G_buffers, z, c, k_mix)
        img, G_buffers = self._synthesize(G_params, G_buffers, ws, k_noise, update_emas)
        return img, ws, G_buffers

    def run_D(self, D_params, img, c, *, blur_sigma=0.0, augment: Optional[Callable] = None):
        """D(augment(blur(img)), c), as the official StyleGAN2Loss.run_D (blur first, then the augment pipe)."""
        img = blur(img, blur_sigma, self.blur_init_sigma)
        if augment is not None:
            img = augment(img)
        return discriminator.apply(D_params, img, c, self.D_cfg, mbstd_fn=self.mbstd_fn,
                                   mixed_dtype=self.mixed_dtype, remat=bool(self.remat))

    #------------------------------------------------------------------------
    # Phases. `cur_nimg` (images shown so far) sets the D-input blur; `augment(x, key)` is the augment pipe.

    def Gmain(self, G_params, G_buffers, D_params, z, c, *, cur_nimg, key=None, augment=None):
        """mean(softplus(-D(G(z, c)))): maximise the logits of generated images."""
        blur_sigma = self.blur_sigma(cur_nimg)
        img, _, _ = self.run_G(G_params, G_buffers, z, c, key=key)
        # The augmentation draws from its own stream, so G's draws do not depend on whether augmentation is on.
        aug = None if augment is None else (lambda x: augment(x, jax.random.fold_in(key, 1)))
        logits = self.run_D(D_params, img, c, blur_sigma=blur_sigma, augment=aug)
        loss = jax.nn.softplus(-logits)                           # -log(sigmoid(logits))
        return jnp.mean(loss), {'scores_fake': logits, 'loss_G': loss}

    def Greg(self, G_params, G_buffers, pl_mean, z, c, *, key):
        """Path-length regularisation (StyleGAN2 Section 3.2): penalty (|J_w^T y| - a)^2 with y ~ N(0, 1/(H W))
        and a the running mean of the lengths (decay pl_decay). `z`, `c` are the path-length batch, which the
        caller draws (`pl_batch_size`). Returns (mean(penalty) * pl_weight, aux with the new pl_mean). (The
        official `pl_no_weight_grad` only skips a weight gradient kernel it does not need; XLA prunes that by
        itself.)"""
        k_mix, k_noise, k_pl = jax.random.split(key, 3)
        ws = generator.mapping(G_params, G_buffers, z, c, self.G_cfg)
        ws = self._mix_styles(ws, G_params, G_buffers, z, c, k_mix)
        img, vjp = jax.vjp(lambda ws: self._synthesize(G_params, G_buffers, ws, k_noise)[0], ws)
        pl_noise = jax.random.normal(k_pl, img.shape) / np.sqrt(img.shape[1] * img.shape[2])
        (pl_grads,) = vjp(pl_noise)                               # d sum(img * noise) / d ws, differentiable
        pl_lengths = jnp.sqrt(jnp.mean(jnp.sum(jnp.square(pl_grads), axis=2), axis=1))
        # lerp toward the batch mean; as officially, the penalty uses the *undetached* new mean (the gradient
        # flows through it with weight pl_decay) while the stored running mean is detached.
        new_pl_mean = pl_mean + self.pl_decay * (jnp.mean(pl_lengths) - pl_mean)
        pl_penalty = jnp.square(pl_lengths - new_pl_mean)
        loss = pl_penalty * self.pl_weight
        return jnp.mean(loss), {'pl_penalty': pl_penalty, 'loss_Gpl': loss,
                                'pl_mean': lax.stop_gradient(new_pl_mean)}

    def Dmain(self, D_params, G_params, G_buffers, z, c, real_img, real_c, *, cur_nimg, key=None, augment=None):
        """mean(softplus(D(G(z, c)))) + mean(softplus(-D(real))). The G pass updates G's buffers (w_avg,
        magnitude_ema), as the official Dmain phase does; they are returned in aux['G_buffers']."""
        blur_sigma = self.blur_sigma(cur_nimg)
        k_g, k_aug_fake, k_aug_real = (jax.random.split(key, 3) if key is not None else (None,) * 3)
        img, _, new_G_buffers = self.run_G(G_params, G_buffers, z, c, update_emas=True, key=k_g)
        img = lax.stop_gradient(img)
        fake_logits = self.run_D(D_params, img, c, blur_sigma=blur_sigma,
                                 augment=None if augment is None else (lambda x: augment(x, k_aug_fake)))
        real_logits = self.run_D(D_params, real_img, real_c, blur_sigma=blur_sigma,
                                 augment=None if augment is None else (lambda x: augment(x, k_aug_real)))
        loss_Dgen = jax.nn.softplus(fake_logits)                  # -log(1 - sigmoid(fake))
        loss_Dreal = jax.nn.softplus(-real_logits)                # -log(sigmoid(real))
        return jnp.mean(loss_Dgen) + jnp.mean(loss_Dreal), {
            'scores_fake': fake_logits, 'scores_real': real_logits, 'loss_Dgen': loss_Dgen,
            'loss_Dreal': loss_Dreal, 'G_buffers': new_G_buffers}

    def Dreg(self, D_params, real_img, real_c, *, cur_nimg, key=None, augment=None):
        """R1: r1_penalty = |d sum(D(x)) / dx|^2 per sample, loss = r1_penalty * (r1_gamma / 2), differentiated
        w.r.t. D (a double backward). The blur and augmentation run inside the graph, so the gradient sees
        them."""
        blur_sigma = self.blur_sigma(cur_nimg)
        aug = None if augment is None else (lambda x: augment(x, key))

        def logits_sum(x):
            logits = self.run_D(D_params, x, real_c, blur_sigma=blur_sigma, augment=aug)
            return jnp.sum(logits), logits
        r1_grads, real_logits = jax.grad(logits_sum, has_aux=True)(real_img)
        r1_penalty = jnp.sum(jnp.square(r1_grads), axis=(1, 2, 3))
        loss = r1_penalty * (self.r1_gamma / 2)
        return jnp.mean(loss), {'scores_real': real_logits, 'r1_penalty': r1_penalty, 'loss_Dr1': loss}
