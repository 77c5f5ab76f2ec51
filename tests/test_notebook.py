"""notebooks/explore.ipynb runs top to bottom (tiny random model, CPU) without errors, and shows its images.

Slow-marked: about 35 s of kernel time on an idle 2-core machine, 60-80 s on a loaded one (two generator
initialisations and their compiles dominate)."""

import os
import pathlib
import time

import pytest

NOTEBOOK = pathlib.Path(__file__).resolve().parent.parent / 'notebooks' / 'explore.ipynb'


@pytest.mark.slow
def test_explore_notebook_runs(tmp_path):
    nbformat = pytest.importorskip('nbformat')
    nbclient = pytest.importorskip('nbclient')
    pytest.importorskip('ipykernel')
    nb = nbformat.read(NOTEBOOK, as_version=4)
    env_network = os.environ.pop('SG3JAX_NETWORK', None)     # the tiny built-in model, whatever the shell says
    try:
        start = time.time()
        client = nbclient.NotebookClient(nb, timeout=1200, kernel_name='python3',
                                         resources={'metadata': {'path': str(tmp_path)}})
        client.execute()
        elapsed = time.time() - start
    finally:
        if env_network is not None:
            os.environ['SG3JAX_NETWORK'] = env_network
    images = sum(1 for cell in nb.cells if cell.cell_type == 'code' for out in cell.get('outputs', [])
                 if 'image/png' in out.get('data', {}))
    errors = [out for cell in nb.cells if cell.cell_type == 'code' for out in cell.get('outputs', [])
              if out.get('output_type') == 'error']
    assert not errors
    assert images == 6, f'expected 6 displayed images (grid, truncation, interpolation, transforms, classes, ' \
                        f'spectrum), got {images}'
    print(f'explore.ipynb ran in {elapsed:.1f} s')
