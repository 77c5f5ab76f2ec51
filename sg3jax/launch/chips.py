"""Former path of `sg3jax.planning.chips`."""

from sg3jax.planning.chips import *  # noqa: F401,F403
