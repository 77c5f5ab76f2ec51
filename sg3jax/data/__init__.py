"""Datasets for sg3jax: the dataset tool's conversion (`convert_dataset`) and the training input pipeline.

    ds = open_dataset('/data/ffhq256')       # dataset tool output, or a TFDS name (+ data_dir)
    it = make_iterator(ds, global_batch_size=32, seed=0, mirror=True, process_index=p, process_count=P)
    batch = to_global_array(next(it), NamedSharding(mesh, P('data')))

Files: sources.py (inputs), transforms.py (crop/resize), make_dataset.py (the tool's work), writer.py (the on-disk
format), dataset.py (random access), pipeline.py (sharded, shuffled, resumable batches).

tensorflow_datasets, array_record and jax are imported inside the functions that use them, so that the dataset
tool and `import sg3jax.data` start without them (jax alone takes 1.4 s to import on a 2-core host).
"""

from sg3jax.data.dataset import Dataset, open_dataset
from sg3jax.data.errors import DatasetError
from sg3jax.data.make_dataset import convert_dataset
from sg3jax.data.pipeline import BatchIterator, make_iterator, to_global_array

__all__ = ['BatchIterator', 'Dataset', 'DatasetError', 'convert_dataset', 'make_iterator', 'open_dataset',
           'to_global_array']
