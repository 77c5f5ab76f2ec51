"""Images per second that the input pipeline delivers to the device, at 256 and 1024 px.

    .venv/bin/python benchmarks/data_throughput.py                 # ~1 minute on 2 CPU cores
    .venv/bin/python benchmarks/data_throughput.py --resolutions 1024 --seconds 20 --threads 8

Writes a synthetic dataset with the dataset tool's writer (raw uint8 records, as real ones), then times the real
path: make_iterator (shuffle, mirror, prefetch) -> to_global_array on a one-axis mesh of every device -> the
trainer's uint8 -> float conversion on the device, blocking until done. Figures per resolution:
  cold:      the first pass over the files after asking the kernel to drop them from the page cache
             (posix_fadvise DONTNEED), i.e. reading from this machine's disk (pipeline alone);
  warm:      later passes, the files in the page cache (a dataset that fits in host RAM, or a fast local SSD);
  host only: the pipeline alone (next(it)), what feeds an accelerator whose transfer and conversion do not
             use the host's cores; on a CPU-only machine 'to device' also pays for the CPU doing the device's
             float conversion.
"""

import argparse
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..'))


def drop_page_cache(path):
    for f in os.listdir(path):
        fd = os.open(os.path.join(path, f), os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def write_synthetic(dest, resolution, num_images):
    from sg3jax.data import writer
    rng = np.random.default_rng(0)
    base = [rng.integers(0, 256, (resolution, resolution, 3), dtype=np.uint8) for _ in range(8)]
    examples = ({'image': base[i % 8], 'filename': f'synthetic/{i:06d}.png'} for i in range(num_images))
    t = time.perf_counter()
    writer.write_dataset(dest, examples, resolution=resolution, num_channels=3)
    return num_images / (time.perf_counter() - t)


def measure(ds, batch_size, *, batches, threads, to_device):
    """Images/s over `batches` batches (after one warm-up batch that also compiles the conversion)."""
    from sg3jax.data import make_iterator
    it = make_iterator(ds, global_batch_size=batch_size, seed=0, mirror=True, prefetch=2, num_threads=threads)
    to_device(next(it))
    t = time.perf_counter()
    for _ in range(batches):
        to_device(next(it))
    dt = time.perf_counter() - t
    it.close()
    return batches * batch_size / dt


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--resolutions', default='256,1024')
    p.add_argument('--batch', type=int, default=32, help='global batch (official --batch default for FFHQ)')
    p.add_argument('--seconds', type=float, default=8.0, help='rough time per warm measurement')
    p.add_argument('--threads', type=int, default=None, help='reader threads (default: the pipeline default)')
    p.add_argument('--dir', default=None, help='where to write the synthetic datasets (default: a temp dir)')
    args = p.parse_args()

    import jax
    import jax.numpy as jnp
    from jax.sharding import NamedSharding, PartitionSpec as P
    from sg3jax.data import open_dataset, to_global_array

    mesh = jax.make_mesh((jax.device_count(),), ('data',))
    sharding = NamedSharding(mesh, P('data'))
    normalize = jax.jit(lambda b: {'img': b['img'].astype(jnp.float32) / 127.5 - 1, 'c': b['c']})

    def to_device(host):
        jax.block_until_ready(normalize(to_global_array(host, sharding)))

    print(f'# {os.cpu_count()} CPU cores, {jax.device_count()} x {jax.devices()[0].device_kind}, '
          f'global batch {args.batch}, mirror on, prefetch 2')
    print('| resolution | images | MiB/image | write img/s | cold: host only | warm: host only | warm: to device |')
    print('|---|---|---|---|---|---|---|')
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        for res in [int(r) for r in args.resolutions.split(',')]:
            # Enough images for a few dozen batches, but at most ~1 GiB on disk.
            mib = res * res * 3 / 2 ** 20
            n = int(min(4096, max(args.batch * 8, 1024 / mib)))
            dest = os.path.join(tmp, f'synthetic{res}')
            write_rate = write_synthetic(dest, res, n)
            ds = open_dataset(dest)
            drop_page_cache(dest)
            cold = measure(ds, args.batch, batches=max(1, n // args.batch - 1), threads=args.threads,
                           to_device=lambda b: None)
            probe = measure(ds, args.batch, batches=2, threads=args.threads, to_device=to_device)
            batches = max(4, int(args.seconds / 2 * probe / args.batch))
            host = measure(ds, args.batch, batches=batches, threads=args.threads, to_device=lambda b: None)
            warm = measure(ds, args.batch, batches=batches, threads=args.threads, to_device=to_device)
            print(f'| {res} | {n} | {mib:.2f} | {write_rate:.0f} | {cold:.0f} | {host:.0f} | {warm:.0f} |',
                  flush=True)


if __name__ == '__main__':
    main()
