"""Former path of `sg3jax.planning.plan`: `python -m sg3jax.launch.plan` runs `python -m sg3jax.planning.plan`."""

import runpy

if __name__ == '__main__':
    runpy.run_module('sg3jax.planning.plan', run_name='__main__', alter_sys=True)
else:
    from sg3jax.planning.plan import *  # noqa: F401,F403
