"""Former path of `sg3jax.networks.state_dicts` (official state_dict <-> params and buffers), kept for user code
that imports it."""

from sg3jax.networks.state_dicts import (  # noqa: F401
    StateDictMismatch, derived_buffers, flatten, from_state_dict, to_state_dict, unflatten)
