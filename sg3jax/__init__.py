"""sg3jax: StyleGAN3 (Alias-Free GAN) and StyleGAN2 in JAX, with the official network's numbers.

Layers: `sg3jax.ops` (parameter-free ops) -> `sg3jax.networks` (init/apply over pytrees) -> training, data, tools.
"""

__version__ = '0.1.0'
