"""Small helpers the trainer, the networks, the metrics and the sampling tools share: time formatting, atomic file
writes, PNGs and image grids, and hashable copies of config dicts (`freeze`, `thaw`, `cache_by_value`).

They need numpy and PIL only (nothing of jax or of the rest of sg3jax), so any module can import them at its top
without an import cycle.
"""

import contextlib
import functools
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


def write_text_atomic(path, text: str):
    """`text` at `path`, atomically."""
    with atomic_path(path) as tmp, open(tmp, 'w') as f:
        f.write(text)


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


#----------------------------------------------------------------------------
# Configs are plain dicts (the official constructor kwargs); these make them usable as cache keys and as fields of
# frozen dataclasses.

# The base type's own value of a scalar, whatever a subclass overrides (str() of a str-valued Enum member is
# 'Class.member', str.__str__ its value).
_SCALARS = {bool: bool, int: int.__int__, float: float.__float__, str: str.__str__}    # bool first: an int subclass


def freeze(obj, keep_other=False):
    """A hashable, immutable copy of plain data: nested dicts, lists and tuples of str, int, float, bool and None.
    `thaw` gives the data back.

    Every value becomes a pair (type, payload): a dict's payload is its (frozen key, frozen value) pairs sorted by
    key, a list's or a tuple's the tuple of its frozen items, a scalar's the scalar. So values that are equal with
    the same types at every level freeze equal, while 1, 1.0 and True, or [1] and (1,), freeze differently.
    Subclasses of dict, list, tuple, str, int and float (an OrderedDict, a namedtuple, numpy's float64, an IntEnum)
    freeze as that base type. Dict keys that cannot be ordered against each other (1 and 'a') raise TypeError, as
    in json.dumps(sort_keys=True). Any other value raises TypeError, unless `keep_other`: then a hashable value is
    kept as itself and compares by its own == (a function: by identity)."""
    if isinstance(obj, dict):
        items = sorted(obj.items(), key=lambda kv: kv[0])
        return dict, tuple((freeze(k, keep_other), freeze(v, keep_other)) for k, v in items)
    if isinstance(obj, (list, tuple)):
        kind = list if isinstance(obj, list) else tuple
        return kind, tuple(freeze(v, keep_other) for v in obj)
    if obj is None:
        return type(None), None
    for kind, value in _SCALARS.items():
        if isinstance(obj, kind):
            return kind, value(obj)
    if not keep_other:
        raise TypeError(f'{type(obj).__name__} {obj!r} is not plain data (a dict, list, tuple, str, int, float, '
                        f'bool or None)')
    hash(obj)       # an unhashable value fails here, not later inside a cache
    return type(obj), obj


def thaw(frozen):
    """The data `frozen` was made from (see `freeze`), in new dicts, lists and tuples; dict keys in sorted order."""
    kind, payload = frozen
    if kind is dict:
        return {thaw(k): thaw(v) for k, v in payload}
    if kind is list or kind is tuple:
        return kind(thaw(v) for v in payload)
    return payload


def cache_by_value(maxsize=128):
    """Decorator: functools.lru_cache(maxsize) for a function of plain data (see `freeze`), so that its arguments
    may be dicts and lists. Calls whose arguments freeze equal share one result. The function receives `thaw`ed
    copies of the arguments, never the caller's dicts and lists: mutating those after a call changes no cached
    result. A result is shared by every call with equal arguments (as with lru_cache, a mutable one too), and, as
    with lru_cache, exceptions are not kept: a call that raised raises again when repeated. The wrapper has
    lru_cache's cache_info() and cache_clear()."""
    def decorate(fn):
        @functools.lru_cache(maxsize)
        def cached(frozen):
            args, kwargs = thaw(frozen)
            return fn(*args, **kwargs)

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            return cached(freeze((args, kwargs)))
        wrapper.cache_info, wrapper.cache_clear = cached.cache_info, cached.cache_clear
        return wrapper
    return decorate
