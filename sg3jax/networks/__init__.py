"""Networks as pure functions over parameter pytrees: `generator` (StyleGAN3-T/R, StyleGAN2) and
`discriminator` (StyleGAN2 resnet D). See each module's docstring for the config format."""

from sg3jax.networks import discriminator, generator, presets

__all__ = ['discriminator', 'generator', 'presets']
