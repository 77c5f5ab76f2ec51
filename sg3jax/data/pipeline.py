"""The input pipeline: an endless, deterministic stream of global batches, of which each process loads only its
own rows, as uint8 on the host (the step converts to float on the device).

    it = make_iterator(ds, global_batch_size=32, seed=0, mirror=True,
                       process_index=jax.process_index(), process_count=jax.process_count(), start_step=k)
    batch = next(it)             # {'img': uint8 [32 / processes, H, W, C], 'c': float32 [.., label_dim]}
    it.state()                   # {'step': k + 1}: global batches consumed, the position to checkpoint
    x = to_global_array(batch, NamedSharding(mesh, P('data')))

The order is a pure function of (seed, step), never of what was read before:
  - The index space is the official one: images 0..N-1, then with `mirror` their x-flips N..2N-1 (official
    training/dataset.py doubles the dataset with xflip the same way).
  - The stream is the concatenation of per-epoch permutations of that space, epoch e shuffled by
    RandomState([seed, e]) (NumPy's legacy generator, whose streams are frozen, so a resume on another NumPy draws
    the same order). Global batch k is stream positions [k*B, (k+1)*B); batches run across epoch boundaries, like
    the official InfiniteSampler, so no image is dropped and the stream never ends.
  - Process p of P takes rows [p*B/P, (p+1)*B/P) of every global batch: disjoint across processes, together the
    whole batch; `to_global_array` (jax.make_array_from_process_local_data) puts each process's rows on its own
    devices of the mesh.
Resuming is therefore `make_iterator(..., start_step=k)`: it yields exactly what the uninterrupted run would have
yielded after k batches, on any number of processes.
"""

import os
import queue
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np


def epoch_permutation(seed, epoch, size):
    """The shuffled order of epoch `epoch`: a permutation of range(size)."""
    return np.random.RandomState([seed, epoch]).permutation(size)


def make_sampler(*, num_images, global_batch_size, seed, mirror, process_index=0, process_count=1):
    """step -> (raw image indices int64 [local], x-flip flags bool [local]) of this process's rows of global batch
    `step`. Keeps the last few epochs' permutations (a batch spans at most a couple unless it is larger than the
    dataset)."""
    local = global_batch_size // process_count
    size = num_images * (2 if mirror else 1)
    cache = {}

    def permutation(epoch):
        if epoch not in cache:
            if len(cache) >= 4:
                cache.pop(min(cache))
            cache[epoch] = epoch_permutation(seed, epoch, size)
        return cache[epoch]

    def sample(step):
        start = step * global_batch_size + process_index * local
        epochs, offsets = np.divmod(np.arange(start, start + local, dtype=np.int64), size)
        virtual = np.empty(local, np.int64)
        for e in np.unique(epochs):
            rows = epochs == e
            virtual[rows] = permutation(int(e))[offsets[rows]]
        return virtual % num_images, virtual >= num_images
    return sample


def load_batch(ds, raw, xflip, *, label_dim, pool=None):
    """{'img': uint8 [n, H, W, C], 'c': float32 [n, label_dim]} for images `raw`, flipped along W where `xflip`.
    Each image is copied once, from its decoded record straight into the batch."""
    n = len(raw)
    img = np.empty((n,) + tuple(ds.image_shape), np.uint8)
    c = np.zeros((n, label_dim), np.float32)

    def one(j):
        x, label = ds.read(raw[j])
        if xflip[j]:
            # Flip W (axis 1 of HWC) moving whole pixels: viewing a pixel's C bytes as one void item makes
            # this copy 1.7x faster than x[:, ::-1], whose innermost loop would run over 3 bytes.
            pixel = f'V{x.shape[2]}'
            np.copyto(img[j].view(pixel), np.ascontiguousarray(x).view(pixel)[:, ::-1])
        else:
            img[j] = x
        if label_dim:
            c[j] = label
    if pool is None:
        for j in range(n):
            one(j)
    else:
        list(pool.map(one, range(n)))
    return {'img': img, 'c': c}


def _put(q, stop, item):
    """Blocks until `item` is queued or `stop` is set (then returns False)."""
    while not stop.is_set():
        try:
            q.put(item, timeout=0.1)
            return True
        except queue.Full:
            pass
    return False


def _produce(q, stop, load, step):
    """The prefetch thread: loads batches step, step + 1, ... into `q`. It holds no reference to its iterator, so
    an iterator that is dropped without close() is still collected, and its __del__ stops this thread."""
    try:
        while not stop.is_set():
            if not _put(q, stop, (step, load(step))):
                return
            step += 1
    except BaseException as e:          # hand the failure to the consumer, which raises it in `next`
        _put(q, stop, (step, e))


class BatchIterator:
    """Iterator of this process's batches; `state()` is the position. Loads `prefetch` batches ahead on a
    background thread (prefetch=0: loads in `next`), each with `num_threads` readers."""

    def __init__(self, ds, sample, *, label_dim, start_step, prefetch, num_threads):
        pool = ThreadPoolExecutor(num_threads) if num_threads > 1 else None

        def load(step):
            raw, xflip = sample(step)
            return load_batch(ds, raw, xflip, label_dim=label_dim, pool=pool)
        self._load, self._pool = load, pool
        self._step = start_step                # global batches handed out so far
        self._prefetch = prefetch
        self._queue = queue.Queue(maxsize=max(prefetch, 1))
        self._stop = threading.Event()
        self._thread = None

    def __iter__(self):
        return self

    def __next__(self):
        if self._stop.is_set():
            raise StopIteration
        if self._prefetch == 0:
            batch = self._load(self._step)
        else:
            if self._thread is None:
                self._thread = threading.Thread(target=_produce, name='sg3jax-data', daemon=True,
                                                args=(self._queue, self._stop, self._load, self._step))
                self._thread.start()
            step, batch = self._queue.get()
            if isinstance(batch, BaseException):
                self.close()
                raise batch
            assert step == self._step, (step, self._step)
        self._step += 1
        return batch

    def state(self):
        """The position to checkpoint: global batches consumed. Resume with make_iterator(start_step=step)."""
        return {'step': self._step}

    def close(self):
        """Stops the prefetch thread and the readers; the iterator then raises StopIteration."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        if self._pool is not None:
            self._pool.shutdown(wait=False)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


def make_iterator(
    ds,                         # dataset.Dataset (or anything with num_images, image_shape, label_dim, read(i))
    *,
    global_batch_size,          # B: images per step over all processes (official --batch)
    seed            = 0,        # shuffling seed (official --seed)
    mirror          = False,    # add x-flipped copies to the index space (official --mirror)
    process_index   = 0,        # this process: loads rows [p*B/P, (p+1)*B/P) of every global batch
    process_count   = 1,        # P: processes sharing the global batch
    start_step      = 0,        # global batches already consumed (the checkpointed position)
    prefetch        = 2,        # batches loaded ahead on a background thread; 0 = load in next()
    use_labels      = True,     # False: `c` has width 0 (official --cond=False)
    num_threads     = None,     # readers per batch; None = min(4, CPU count)
):
    """This process's endless stream of batches {'img': uint8 [B/P, H, W, C], 'c': float32 [B/P, label_dim]},
    starting after `start_step` global batches (module docstring)."""
    for name, value in (('global_batch_size', global_batch_size), ('process_count', process_count)):
        if not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f'{name} must be a positive int, got {value!r}')
    if global_batch_size % process_count:
        raise ValueError(f'global_batch_size ({global_batch_size}) must be divisible by process_count '
                         f'({process_count})')
    if not 0 <= process_index < process_count:
        raise ValueError(f'process_index ({process_index}) must be in [0, process_count={process_count})')
    if not isinstance(start_step, (int, np.integer)) or start_step < 0:
        raise ValueError(f'start_step must be an int >= 0, got {start_step!r}')
    if not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2 ** 32:
        raise ValueError(f'seed must be an int in [0, 2**32), got {seed!r}')
    if prefetch < 0:
        raise ValueError(f'prefetch must be >= 0, got {prefetch}')
    sample = make_sampler(num_images=ds.num_images, global_batch_size=global_batch_size, seed=int(seed),
                          mirror=bool(mirror), process_index=process_index, process_count=process_count)
    threads = num_threads if num_threads is not None else min(4, os.cpu_count() or 1)
    return BatchIterator(ds, sample, label_dim=ds.label_dim if use_labels else 0, start_step=int(start_step),
                         prefetch=prefetch, num_threads=threads)


def to_global_array(local, sharding):
    """This process's rows (an array or a dict of arrays) -> global jax.Arrays laid out by `sharding` (e.g.
    NamedSharding(mesh, P('data'))); every process calls it with its own rows, in process order."""
    import jax   # lazily: the data package stays importable (and the dataset tool fast) without a backend
    return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), local)
