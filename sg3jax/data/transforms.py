"""The dataset tool's crop/resize step, with the official dataset_tool.py behaviour for each --transform:

    (none)            resize to --resolution WxH if given (aspect ratio not kept), else leave the image as is
    center-crop       crop the largest centred square, resize it to WxH
    center-crop-wide  crop rows to the aspect ratio W:H, resize to WxH, centre it on a black WxW canvas;
                      images narrower than W or shorter than the cropped height are dropped (returns None)

Resizing is PIL's Lanczos, as official. Images are uint8 [H, W, C] with C = 1 or 3 (official crops assume RGB;
grayscale goes through the same arithmetic here).
"""

import re

import numpy as np
import PIL.Image

from sg3jax.data.errors import DatasetError

TRANSFORMS = ('center-crop', 'center-crop-wide')


def parse_resolution(text):
    """'256x256' or '256,256' -> (256, 256): (width, height), official --resolution syntax."""
    m = re.fullmatch(r'\s*(\d+)\s*[x,]\s*(\d+)\s*', text or '')
    if not m or int(m.group(1)) == 0 or int(m.group(2)) == 0:
        raise DatasetError(f'--resolution {text!r}: expected WxH with positive integers, e.g. 256x256')
    return int(m.group(1)), int(m.group(2))


def _resize(img, width, height):
    if img.shape[1] == width and img.shape[0] == height:
        return img
    pil = PIL.Image.fromarray(img[:, :, 0] if img.shape[2] == 1 else img)
    out = np.asarray(pil.resize((width, height), PIL.Image.LANCZOS))
    return out[:, :, None] if out.ndim == 2 else out


def _center_crop(width, height, img):
    h, w = img.shape[:2]
    s = min(h, w)
    img = img[(h - s) // 2:(h + s) // 2, (w - s) // 2:(w + s) // 2]
    return _resize(img, width, height)


def _center_crop_wide(width, height, img):
    h, w = img.shape[:2]
    ch = int(round(width * h / w))       # rows that keep the W:H aspect once the width is W
    if w < width or ch < height:
        return None                      # too small to fill the frame: the official tool drops it
    img = _resize(img[(h - ch) // 2:(h + ch) // 2], width, height)
    canvas = np.zeros((width, width, img.shape[2]), np.uint8)
    canvas[(width - height) // 2:(width - height) // 2 + height] = img
    return canvas


def output_size(transform, resolution):
    """(width, height) of every output image, or None when it is the first image's (no --resolution)."""
    if resolution is None:
        return None
    width, height = resolution
    return (width, width) if transform == 'center-crop-wide' else (width, height)


def make_transform(transform, resolution):
    """img -> img (or None: drop it). Checks the flags now, before any image is read."""
    if transform is not None and transform not in TRANSFORMS:
        raise DatasetError(f'--transform {transform!r}: expected one of {", ".join(TRANSFORMS)}')
    if transform is not None and resolution is None:
        raise DatasetError(f'--transform {transform} needs --resolution WxH (official dataset_tool rule)')
    size = output_size(transform, resolution)
    if size is not None:
        check_square_power_of_two(size, f'--resolution {resolution[0]}x{resolution[1]}'
                                        f'{" with --transform " + transform if transform else ""}')
    if transform is None:
        return (lambda img: img) if resolution is None else (lambda img: _resize(img, *resolution))
    fn = _center_crop if transform == 'center-crop' else _center_crop_wide
    return lambda img: fn(*resolution, img)


def check_square_power_of_two(size, what):
    """StyleGAN's resolution rule; `what` names the culprit (a file or the flags) at the start of the message."""
    width, height = size
    if width != height:
        raise DatasetError(f'{what}: {width}x{height} images are not square; pass --resolution NxN, with '
                           f'--transform center-crop to keep the aspect ratio')
    if width < 4 or width & (width - 1):
        raise DatasetError(f'{what}: {width}x{height} is not a power of two >= 4; pass --resolution, e.g. '
                           f'--resolution 256x256')
