"""The former name of sg3jax.sampling, kept for notebooks written before the move (`from sg3jax.tools import load,
sampling`): `sampling` here is sg3jax.sampling.generate."""

from sg3jax.sampling import cli, generate as sampling, load  # noqa: F401
