"""Former path of `sg3jax.planning.plan_table`: `python -m sg3jax.launch.plan_table` runs
`python -m sg3jax.planning.plan_table`."""

import runpy

if __name__ == '__main__':
    runpy.run_module('sg3jax.planning.plan_table', run_name='__main__', alter_sys=True)
else:
    from sg3jax.planning.plan_table import *  # noqa: F401,F403
