"""Small helpers the trainer, the metrics and the sampling tools share: time formatting, atomic file writes, PNGs
and image grids.

They need numpy and PIL only (nothing of jax or of the rest of sg3jax), so any module can import them at its top
without an import cycle.
"""

import contextlib
import os
import tempfile

import numpy as np
import PIL.Image


def error_reason(e: BaseException) -> str:
    """The first line of the innermost explicit cause (Orbax wraps TensorStore's precise message, e.g. a byte
    range past the end of a truncated file, in a long generic one)."""
    while e.__cause__ is not None:
        e = e.__cause__
    text = (str(e).strip().splitlines() or [''])[0]
    return f'{type(e).__name__}: {text[:800]}'


def format_time(seconds) -> str:
    """3725 -> '1h 02m 05s' (the official dnnlib.util.format_time)."""
    s = int(np.rint(seconds))
    if s < 60:
        return f'{s}s'
    if s < 3600:
        return f'{s // 60}m {s % 60:02d}s'
    if s < 86400:
        return f'{s // 3600}h {(s // 60) % 60:02d}m {s % 60:02d}s'
    return f'{s // 86400}d {(s // 3600) % 24:02d}h {(s // 60) % 60:02d}m'


@contextlib.contextmanager
def atomic_path(path):
    """Yields a temporary path beside `path` (same directory and suffix, so writers that look at the extension
    still work); on success it is renamed onto `path` with os.replace (atomic on POSIX), on failure removed.
    Readers therefore see the old file or the complete new one, never a partial file."""
    path = os.fspath(path)
    d, name = os.path.split(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    stem, ext = os.path.splitext(name)
    fd, tmp = tempfile.mkstemp(prefix=f'.{stem}.tmp-', suffix=ext, dir=d)
    os.close(fd)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def savez_atomic(path, arrays):
    """np.savez of `arrays` (a dict) at `path`, atomically; no pickled objects."""
    with atomic_path(path) as tmp, open(tmp, 'wb') as f:
        np.savez(f, **arrays)


def save_png(path, img):
    """uint8 [H, W, C] (C = 1 or 3) -> PNG at `path`, atomically (grayscale as mode 'L', as the official tool)."""
    img = np.asarray(img)
    pil = PIL.Image.fromarray(img[:, :, 0], 'L') if img.shape[2] == 1 else PIL.Image.fromarray(img, 'RGB')
    with atomic_path(path) as tmp:
        pil.save(tmp, format='PNG')


def image_grid(images, gw, gh=None) -> np.ndarray:
    """[N, H, W, C] -> one [gh*H, gw*W, C] image, row-major (gen_video's layout_grid)."""
    images = np.asarray(images)
    n, h, w, c = images.shape
    gh = n // gw if gh is None else gh
    if gh * gw != n:
        raise ValueError(f'{n} images do not fill a {gw}x{gh} grid')
    return images.reshape(gh, gw, h, w, c).transpose(0, 2, 1, 3, 4).reshape(gh * h, gw * w, c)


def save_image_grid(images, path, grid):
    """[N, H, W, C] in [-1, 1] -> one PNG of gh rows x gw columns (the official training loop's save_image_grid),
    written atomically; a failed write raises OSError naming `path`."""
    gw, gh = grid
    img = np.rint((np.asarray(images, np.float32) + 1) * (255 / 2)).clip(0, 255).astype(np.uint8)
    try:
        save_png(path, image_grid(img, gw, gh))
    except OSError as e:    # a full disk: no half-written PNG left behind, and the error names the grid
        raise OSError(f'{path}: the sample grid could not be written ({e})') from e
