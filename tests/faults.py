"""Write failures on demand, for the tests that check nothing half-written is left behind (not collected).

A lowered RLIMIT_FSIZE makes the kernel fail every write past that size in this process (EFBIG, "File too
large"), in Python and C++ writers alike (Orbax's TensorStore, ArrayRecord, PIL): the same failure a full disk
gives (ENOSPC) at the same call, without root or a small filesystem. SIGXFSZ, which would kill the process, is
ignored meanwhile.
"""

import contextlib
import resource
import signal


@contextlib.contextmanager
def file_size_limit(nbytes):
    """Within the block, writing a file past `nbytes` fails."""
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, handler)
