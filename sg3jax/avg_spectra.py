"""Average power spectra of real and generated images (the official NVlabs/stylegan3 avg_spectra.py, in JAX).

    python -m sg3jax.avg_spectra stats --source ~/datasets/ffhq-1024
    python -m sg3jax.avg_spectra calc --source ~/datasets/ffhq-1024 --dest tmp/training-data.npz \
        --mean 112.684 --std 69.509
    python -m sg3jax.avg_spectra calc --source ~/runs/ffhq --dest tmp/ours.npz --mean 112.684 --std 69.509 \
        --num 70000
    python -m sg3jax.avg_spectra heatmap tmp/training-data.npz --save tmp/training-data.png --dpi 300
    python -m sg3jax.avg_spectra slices tmp/training-data.npz tmp/ours.npz --save tmp/slices.png

--source: a generator (sg3jax export, training workdir, NVIDIA .pkl; --num required) or images: an sg3jax
dataset (dataset_tool output), a folder or .zip of images (the official ImageFolderDataset inputs), or tfds:NAME.

`calc` follows the official computation exactly: uint8 images, whitened as (x - mean) / std in float64, times a
separable Kaiser window (beta 8, symmetric, scaled to unit energy), zero-padded on the right and bottom to
`interp` (4) times the image size, |FFT|^2 averaged over channels and images; saved as .npz with `spectrum`
[S, S] float64 (unshifted, DC at [0, 0]) and `image_size`. Generated images: seeds seed .. seed+num-1 with the
official z = RandomState(seed).randn(1, z_dim) and, for conditional networks, a class drawn from the same
RandomState; psi 1; StyleGAN2 noise 'random' (the official G's default), keyed by the seed. Dataset subsets: with
--num smaller than the dataset, the official selection (indices shuffled by RandomState(seed), the first num kept,
in order). `heatmap` and `slices` draw the official plots with matplotlib; every output file is written
atomically. Differences: plots are only saved (--save is required: these tools run headless); the FFT runs in
NumPy float64 on the host (a real FFT, then the conjugate-symmetric half is mirrored: same values).
"""

import argparse
import os
import sys

import numpy as np
import scipy.fft
import scipy.ndimage
from tqdm import tqdm

from sg3jax import sampling, utils
from sg3jax.data import DatasetError, open_dataset, sources
from sg3jax.sampling import cli, load


def build_parser():
    p = argparse.ArgumentParser(prog='python -m sg3jax.avg_spectra', description=__doc__.split('\n\n')[0])
    sub = p.add_subparsers(dest='command', required=True)

    def source_opts(s):
        s.add_argument('--source', required=True, metavar='[NETWORK|DATASET|DIR|ZIP]',
                       help='generator (export, workdir, .pkl) or images (sg3jax dataset, folder, .zip, tfds:NAME)')
        s.add_argument('--num', type=int, default=None, metavar='INT',
                       help='number of images to process (default: all; required for generators)')
        s.add_argument('--seed', type=int, default=0, metavar='INT', help='random seed for selecting the images')
        s.add_argument('--batch-size', type=int, default=16, help='generated images per jitted batch')

    s = sub.add_parser('stats', help="dataset mean and standard deviation needed by 'calc'")
    source_opts(s)
    s = sub.add_parser('calc', help='average power spectrum, stored in a .npz file')
    source_opts(s)
    s.add_argument('--dest', required=True, metavar='NPZ', help='where to store the result')
    s.add_argument('--mean', type=float, required=True, metavar='FLOAT', help='dataset mean for whitening')
    s.add_argument('--std', type=float, required=True, metavar='FLOAT', help='dataset standard deviation')
    s.add_argument('--beta', type=float, default=8.0, metavar='FLOAT', help='Kaiser window shape (default 8)')
    s.add_argument('--interp', type=int, default=4, metavar='INT', help='frequency-domain interpolation factor')
    s = sub.add_parser('heatmap', help='2D heatmap of one .npz')
    s.add_argument('npz_file')
    s.add_argument('--save', required=True, metavar='PNG', help='where to save the plot')
    s.add_argument('--dpi', type=float, default=100, help='figure resolution (default 100)')
    s.add_argument('--smooth', type=float, default=1.25, help='amount of smoothing (default 1.25)')
    s = sub.add_parser('slices', help='0 and 45 degree slices of one or more .npz')
    s.add_argument('npz_files', nargs='+')
    s.add_argument('--save', required=True, metavar='PNG', help='where to save the plot')
    s.add_argument('--dpi', type=float, default=100, help='figure resolution (default 100)')
    s.add_argument('--smooth', type=float, default=0.0, help='amount of smoothing (default 0)')
    return p

#----------------------------------------------------------------------------
# Image sources: (num_images, image_size, iterator over uint8 [B, H, W, C] batches).

def _is_network(source):
    try:
        load.resolve(source)
        return True
    except cli.ToolError:
        return False


def stream_source_images(source, num=None, seed=0, batch_size=16):
    """(num_images, image_size, iterator of uint8 [B, H, W, C] batches) for a generator or a set of images."""
    if num is not None and num < 1:
        raise cli.ToolError(f'--num must be >= 1, got {num}')
    if seed < 0:
        raise cli.ToolError(f'--seed must be >= 0, got {seed}')
    if str(source).lower().endswith('.pkl') or _is_network(source):
        if num is None:
            raise cli.ToolError('--num is required when --source points to a generator')
        G = sampling.Generator(*load.load_generator(source))
        return num, G.spec.img_resolution, generated_images(G, num, seed, batch_size)
    return dataset_images(source, num, seed)


def generated_images(G, num, seed=0, batch_size=16):
    """Official stream: image i from RandomState(seed + i): z = randn(1, z_dim), then the class randint(c_dim)."""
    G = sampling.as_generator(G)
    s = G.spec
    for i in range(0, num, batch_size):
        seeds = list(range(seed + i, seed + min(i + batch_size, num)))
        z = np.zeros([len(seeds), s.z_dim], np.float32)
        c = np.zeros([len(seeds), s.c_dim], np.float32)
        for j, sd in enumerate(seeds):
            rnd = np.random.RandomState(sd)
            z[j] = rnd.randn(s.z_dim)
            if s.c_dim > 0:
                c[j, rnd.randint(s.c_dim)] = 1
        ws = sampling.mapping(G, z, c, batch_size=batch_size)
        yield sampling.synthesis(G, ws, noise_mode='random', noise_seeds=seeds, batch_size=batch_size)


def select_indices(total, num, seed):
    """Official Dataset(max_size=num, random_seed=seed): all in order, or a RandomState(seed)-shuffled subset of
    num, put back in order. Asking for more than there are is an error (official calc/stats)."""
    idx = np.arange(total)
    if num is not None and total > num:
        np.random.RandomState(seed).shuffle(idx)
        idx = np.sort(idx[:num])
    if num is not None and num != len(idx):
        raise cli.ToolError(f'--source contains fewer than {num} images ({total})')
    return idx


def dataset_images(source, num=None, seed=0):
    src = os.fspath(source)
    try:
        ds = open_dataset(src[len('tfds:'):] if src.startswith('tfds:') else src)
        idx = select_indices(len(ds), num, seed)
        return len(idx), ds.resolution, (ds[int(i)][0][None] for i in idx)
    except DatasetError:
        pass        # not an sg3jax dataset: a folder or zip of images (the official ImageFolderDataset inputs)
    except Exception as e:      # TFDS raises its own types for "no dataset here"
        if not (os.path.isdir(src) or src.lower().endswith('.zip')):
            raise cli.ToolError(f'--source {src}: cannot open it as a dataset ({type(e).__name__}: {e})') from e
    if not (os.path.isdir(src) or os.path.isfile(src)):
        raise cli.ToolError(f'--source {src}: no such file or directory; expected a generator (export, workdir, '
                            f'.pkl), an sg3jax dataset, a folder or .zip of images, or tfds:NAME')
    try:
        ctx = sources.open_source(src)
        info = ctx.__enter__()
    except DatasetError as e:
        raise cli.ToolError(f'--source {src}: {e}') from e
    names = info['names']
    if not names:
        ctx.__exit__(None, None, None)
        raise cli.ToolError(f'--source {src}: no images found')
    idx = select_indices(len(names), num, seed)
    first = info['load'](names[idx[0]])[0]
    if first.shape[0] != first.shape[1]:
        ctx.__exit__(None, None, None)
        raise cli.ToolError(f'--source {src}: {names[idx[0]]} is {first.shape[1]}x{first.shape[0]}; images must '
                            f'be square (convert them with python -m sg3jax.dataset_tool)')

    def gen():
        try:
            for i in idx:
                img = info['load'](names[i])[0]
                if img.shape != first.shape:
                    raise cli.ToolError(f'--source {src}: {names[i]} is {img.shape}, but {names[idx[0]]} is '
                                        f'{first.shape}; all images must have one size')
                yield img[None]
        finally:
            ctx.__exit__(None, None, None)
    return len(idx), first.shape[0], gen()

#----------------------------------------------------------------------------
# Spectrum.

def kaiser_window_2d(image_size, beta=8.0) -> np.ndarray:
    """[S, S] float64: the official torch.kaiser_window(S, periodic=False, beta) (= np.kaiser), scaled to unit
    sum of squares, outer product with itself."""
    w = np.kaiser(image_size, beta).astype(np.float64)
    w = w / np.sqrt(np.square(w).sum())
    return np.outer(w, w)


def power_spectrum(images, mean, std, window, spectrum_size) -> np.ndarray:
    """Sum over the batch of the per-image channel-mean |FFT|^2 of uint8 [B, H, W, C] images (official `calc`:
    whiten, window, zero-pad right/bottom, fftn, abs^2, mean over channels), [S, S] float64. Computed with rfft2:
    the input is real, so P[u, v] = P[-u mod S, -v mod S] fills the other half exactly."""
    x = (np.asarray(images, np.float64) - mean) / std
    x = np.moveaxis(x, -1, 1) * window                               # [B, C, H, W]
    h = scipy.fft.rfft2(x, s=(spectrum_size, spectrum_size), axes=(2, 3), workers=-1)
    half = (h.real ** 2 + h.imag ** 2).mean(axis=1).sum(axis=0)     # [S, S//2+1]
    full = np.empty([spectrum_size, spectrum_size], np.float64)
    full[:, :half.shape[1]] = half
    rest = spectrum_size - half.shape[1]                              # columns S//2+1 .. S-1
    if rest > 0:
        rows = (-np.arange(spectrum_size)) % spectrum_size
        cols = spectrum_size - np.arange(half.shape[1], spectrum_size)   # -v mod S, all in 1 .. S//2 - (S odd)
        full[:, half.shape[1]:] = half[rows][:, cols]
    return full


def average_spectrum(image_iter, num_images, image_size, mean, std, beta=8.0, interp=4, progress=True):
    """[S, S] float64 mean power spectrum (S = image_size * interp) of uint8 [B, H, W, C] batches."""
    spectrum_size = image_size * interp
    window = kaiser_window_2d(image_size, beta)
    spectrum = np.zeros([spectrum_size, spectrum_size], np.float64)
    with tqdm(total=num_images, desc='calc', unit='img', disable=not progress, file=sys.stderr) as bar:
        for images in image_iter:
            spectrum += power_spectrum(images, mean, std, window, spectrum_size)
            bar.update(len(images))
    return spectrum / num_images


def save_spectrum(dest, spectrum, image_size):
    """The official .npz (spectrum, image_size), written atomically."""
    with utils.atomic_path(dest) as tmp:
        with open(tmp, 'wb') as f:          # a file object: np.savez would append '.npz' to a name
            np.savez(f, spectrum=spectrum, image_size=image_size)


def calc(source, dest, mean, std, num=None, seed=0, beta=8.0, interp=4, batch_size=16, progress=True):
    """Average power spectrum of `source` -> `dest` .npz (spectrum, image_size); returns the spectrum."""
    if not std > 0:
        raise cli.ToolError(f'--std must be > 0, got {std}')
    if beta < 0:
        raise cli.ToolError(f'--beta must be >= 0, got {beta}')
    if interp < 1:
        raise cli.ToolError(f'--interp must be >= 1, got {interp}')
    num_images, image_size, image_iter = stream_source_images(source, num, seed, batch_size)
    spectrum = average_spectrum(image_iter, num_images, image_size, mean, std, beta, interp, progress)
    save_spectrum(dest, spectrum, image_size)
    return spectrum


def stats(source, num=None, seed=0, batch_size=16, progress=True):
    """(mean, std) of all pixel values (official `stats`: float64 moments over every pixel and channel)."""
    num_images, _, image_iter = stream_source_images(source, num, seed, batch_size)
    moments = np.zeros([3], np.float64)
    with tqdm(total=num_images, desc='stats', unit='img', disable=not progress, file=sys.stderr) as bar:
        for images in image_iter:
            x = np.asarray(images, np.float64)
            moments += [x.size, x.sum(), np.square(x).sum()]
            bar.update(len(images))
    moments /= moments[0]
    return moments[1], float(np.sqrt(moments[2] - moments[1] ** 2))

#----------------------------------------------------------------------------
# Plots.

def construct_heatmap(npz_file, smooth):
    """(heatmap in dB, fftshifted, with the first row and column repeated at the end; image_size), official."""
    try:
        data = np.load(npz_file)
        spectrum, image_size = data['spectrum'], int(data['image_size'])
    except (OSError, ValueError, KeyError) as e:
        raise cli.ToolError(f'{npz_file}: not an avg_spectra .npz with spectrum and image_size ({e})') from e
    hmap = np.fft.fftshift(np.log10(spectrum) * 10)
    hmap = np.concatenate([hmap, hmap[:1, :]], axis=0)
    hmap = np.concatenate([hmap, hmap[:, :1]], axis=1)
    if smooth > 0:
        hmap = scipy.ndimage.gaussian_filter(hmap, sigma=spectrum.shape[0] / image_size * smooth, mode='nearest')
    return hmap, image_size


# pyplot is imported where a plot is drawn, with the Agg backend: importing this module (a notebook does) leaves
# the notebook's matplotlib backend alone.

def _save_figure(fig, save, dpi):
    import matplotlib.pyplot as plt
    fmt = os.path.splitext(save)[1][1:].lower() or 'png'
    with utils.atomic_path(save) as tmp:
        fig.savefig(tmp, format=fmt, dpi=dpi)
    plt.close(fig)


def heatmap(npz_file, save, smooth=1.25, dpi=100):
    """The official 2D heatmap: filled contours from -40 to 20 dB in 5 dB steps, 'Blues'."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    hmap, image_size = construct_heatmap(npz_file, smooth)
    fig = plt.figure(figsize=[6, 4.8], dpi=dpi, tight_layout=True)
    freqs = np.linspace(-0.5, 0.5, num=hmap.shape[0], endpoint=True) * image_size
    ticks = np.linspace(freqs[0], freqs[-1], num=5, endpoint=True)
    levels = np.linspace(-40, 20, num=13, endpoint=True)
    plt.xlim(ticks[0], ticks[-1])
    plt.ylim(ticks[0], ticks[-1])
    plt.xticks(ticks)
    plt.yticks(ticks)
    plt.contourf(freqs, freqs, hmap, levels=levels, extend='both', cmap='Blues')
    plt.gca().set_aspect('equal')
    plt.colorbar(ticks=levels)
    plt.contour(freqs, freqs, hmap, levels=levels, extend='both', linestyles='solid', linewidths=1,
                colors='midnightblue', alpha=0.2)
    _save_figure(fig, save, dpi)
    return save


def slices(npz_files, save, smooth=0.0, dpi=100):
    """The official 0-degree and 45-degree slices of one or more spectra (all of one resolution)."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    cases = []
    for f in npz_files:
        hmap, image_size = construct_heatmap(f, smooth)
        cases.append((hmap, image_size, os.path.splitext(os.path.basename(f))[0]))
    image_size, hmap_size = cases[0][1], cases[0][0].shape[0]
    if any(c[1] != image_size or c[0].shape[0] != hmap_size for c in cases):
        raise cli.ToolError('all .npz must have the same resolution')
    fig = plt.figure(figsize=[12, 4.6], dpi=dpi, tight_layout=True)
    center = hmap_size // 2
    rng = np.arange(center, hmap_size)
    freqs0 = np.linspace(0, image_size / 2, num=(hmap_size // 2 + 1), endpoint=True)
    freqs45 = np.linspace(0, image_size / np.sqrt(2), num=(hmap_size // 2 + 1), endpoint=True)
    xticks0 = np.linspace(freqs0[0], freqs0[-1], num=9, endpoint=True)
    xticks45 = np.round(np.linspace(freqs45[0], freqs45[-1], num=9, endpoint=True))
    yticks = np.linspace(-50, 30, num=9, endpoint=True)
    for i, (title, xs, xticks, pick) in enumerate([
            ('0\u00b0 slice', freqs0, xticks0, lambda h: h[center, rng]),
            ('45\u00b0 slice', freqs45, xticks45, lambda h: h[rng, rng])]):
        plt.subplot(1, 2, i + 1)
        plt.title(title)
        plt.xlim(xticks[0], xticks[-1])
        plt.ylim(yticks[0], yticks[-1])
        plt.xticks(xticks)
        plt.yticks(yticks)
        for hmap, _, label in cases:
            plt.plot(xs, pick(hmap), label=label)
        plt.grid()
        plt.legend(loc='upper right')
    _save_figure(fig, save, dpi)
    return save

#----------------------------------------------------------------------------

def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)

    def run(a):
        if a.command == 'stats':
            mean, std = stats(a.source, a.num, a.seed, a.batch_size)
            print(f'--mean={mean:g} --std={std:g}')
            return mean, std
        if a.command == 'calc':
            return calc(a.source, a.dest, a.mean, a.std, a.num, a.seed, a.beta, a.interp, a.batch_size)
        if a.command == 'heatmap':
            return heatmap(a.npz_file, a.save, a.smooth, a.dpi)
        return slices(a.npz_files, a.save, a.smooth, a.dpi)
    return cli.run_main(parser, run, args)


if __name__ == '__main__':
    main()
