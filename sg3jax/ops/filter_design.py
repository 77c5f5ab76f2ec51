"""Low-pass filter design for StyleGAN3's synthesis layers (paper Section 3.2 and Appendix C).

Filters depend only on the network config, so they are computed here in float64 numpy and rounded to float32
once, exactly as the official code stores its `up_filter`/`down_filter` buffers. They are never parameters.
"""

from typing import Optional

import numpy as np
import scipy.signal
import scipy.special


def design_lowpass_filter(
    numtaps: int,           # Number of taps; 1 = identity (returns None).
    cutoff: float,          # Cutoff frequency f_c (same units as fs).
    width: float,           # Transition band width = 2 * f_h.
    fs: float,              # Sampling rate.
    radial: bool = False,   # Radially symmetric jinc filter (StyleGAN3-R down-filters) instead of separable.
) -> Optional[np.ndarray]:
    """Official `SynthesisLayer.design_lowpass_filter`.

    Separable: Kaiser-windowed sinc from `scipy.signal.firwin(numtaps, cutoff, width=width, fs=fs)`, a [numtaps]
    filter applied along both axes. Radial: a jinc, 2 f_c J1(2 pi f_c r) / (2 pi f_c r) up to scale, times the outer
    product of a 1-D Kaiser window whose beta comes from the same attenuation rule as firwin, normalised to sum 1;
    a [numtaps, numtaps] filter (Appendix F: rotation equivariance needs a radially symmetric filter).
    """
    if numtaps < 1:
        raise ValueError(f'numtaps must be >= 1, got {numtaps}')
    if numtaps == 1:
        return None
    if not radial:
        f = scipy.signal.firwin(numtaps=numtaps, cutoff=cutoff, width=width, fs=fs)
        return f.astype(np.float32)
    x = (np.arange(numtaps) - (numtaps - 1) / 2) / fs
    r = np.hypot(*np.meshgrid(x, x))
    f = scipy.special.j1(2 * cutoff * (np.pi * r)) / (np.pi * r)
    beta = scipy.signal.kaiser_beta(scipy.signal.kaiser_atten(numtaps, width / (fs / 2)))
    w = np.kaiser(numtaps, beta)
    f *= np.outer(w, w)
    f /= np.sum(f)
    return f.astype(np.float32)
