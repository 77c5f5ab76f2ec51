"""Command-line helpers shared by the sampling tools: the official argument syntaxes.

The parsers accept what the official tools accept (NVlabs/stylegan3 gen_images.py `parse_range`, `parse_vec2`,
gen_video.py `parse_tuple`) and raise ToolError naming the flag otherwise; each tool's main() turns a ToolError
into argparse's usage error (exit status 2).
"""

import re
import sys
from typing import List, Tuple

import numpy as np


class ToolError(ValueError):
    """Bad input to a sampling tool; the message names the flag or file and what was expected."""


_RANGE = re.compile(r'^(\d+)-(\d+)$')


def parse_range(s, flag='--seeds') -> List[int]:
    """'1,2,5-10' -> [1, 2, 5, 6, 7, 8, 9, 10] (official parse_range: comma-separated ints and inclusive ranges)."""
    if isinstance(s, (list, tuple)):
        return [int(v) for v in s]
    out = []
    for part in str(s).split(','):
        part = part.strip()
        m = _RANGE.match(part)
        if m:
            lo, hi = int(m.group(1)), int(m.group(2))
            if hi < lo:
                raise ToolError(f'{flag} {s!r}: range {part!r} is empty (the end must be >= the start)')
            out.extend(range(lo, hi + 1))
        elif re.fullmatch(r'\d+', part):
            out.append(int(part))
        else:
            raise ToolError(f"{flag} {s!r}: expected comma-separated non-negative integers or ranges like "
                            f"'0,1,4-6', got {part!r}")
    return out


def parse_seeds(s, flag='--seeds') -> List[int]:
    """parse_range, restricted to what np.random.RandomState accepts as a seed (0 .. 2**32 - 1)."""
    seeds = parse_range(s, flag)
    if not seeds:
        raise ToolError(f'{flag}: no seeds given')
    bad = [v for v in seeds if not 0 <= v < 2 ** 32]
    if bad:
        raise ToolError(f'{flag}: seeds must be in [0, 2**32), got {bad[0]}')
    return seeds


def parse_vec2(s, flag='--translate') -> Tuple[float, float]:
    """'0.3,1' -> (0.3, 1.0) (official parse_vec2)."""
    if isinstance(s, (list, tuple)) and len(s) == 2:
        return float(s[0]), float(s[1])
    parts = str(s).split(',')
    try:
        if len(parts) == 2:
            v = (float(parts[0]), float(parts[1]))
            if all(np.isfinite(v)):
                return v
    except ValueError:
        pass
    raise ToolError(f"{flag} {s!r}: expected two finite numbers 'x,y', e.g. '0.3,1'")


def parse_tuple(s, flag='--grid') -> Tuple[int, int]:
    """'4x2' or '4,2' -> (4, 2) (official gen_video parse_tuple); both must be >= 1 here."""
    if isinstance(s, (list, tuple)) and len(s) == 2:
        w, h = int(s[0]), int(s[1])
    else:
        m = re.fullmatch(r'(\d+)[x,](\d+)', str(s))
        if not m:
            raise ToolError(f"{flag} {s!r}: expected 'WxH', e.g. '4x2'")
        w, h = int(m.group(1)), int(m.group(2))
    if w < 1 or h < 1:
        raise ToolError(f'{flag} {s!r}: width and height must be >= 1')
    return w, h


TRUNC_CENTERS = ('w_avg', 'class')     # what truncation pulls toward (sampling.truncation_center)


def add_trunc_center(parser):
    parser.add_argument('--trunc-center', dest='trunc_center', choices=TRUNC_CENTERS, default='w_avg',
                        help="truncate toward the global w_avg (official, default) or toward the mean w of --class "
                             "(conditional networks)")


def parse_args(parser, argv=None):
    """parser.parse_args, taking a value that starts with '-' as the value of the flag before it, as the official
    (click) tools do: `--translate -0.3,0.25`, which argparse alone reads as an unknown option."""
    argv = list(sys.argv[1:] if argv is None else argv)
    takes_value = {o for a in parser._actions if a.option_strings and a.nargs is None for o in a.option_strings}
    options = {o for a in parser._actions for o in a.option_strings}
    joined, i = [], 0
    while i < len(argv):
        if argv[i] in takes_value and i + 1 < len(argv) and argv[i + 1].startswith('-') \
                and argv[i + 1] not in options:
            joined.append(f'{argv[i]}={argv[i + 1]}')
            i += 2
        else:
            joined.append(argv[i])
            i += 1
    return parser.parse_args(joined)


def run_main(parser, fn, args):
    """Calls fn(args); a ToolError becomes parser.error (message on stderr, exit status 2)."""
    try:
        return fn(args)
    except ToolError as e:
        parser.error(str(e))
