"""Per-chip peak rates of Cloud TPU generations, for the plan's memory check and roofline estimate.

Figures are Google's published per-chip specifications (the "key specifications" table of each generation's
Cloud TPU page; every figure below checked against those pages on 2026-11-25):
  v4   https://cloud.google.com/tpu/docs/v4   275 TFLOP/s bf16, 32 GiB HBM2, 1200 GB/s
  v5e  https://cloud.google.com/tpu/docs/v5e  197 TFLOP/s bf16, 16 GB HBM2,  819 GB/s
  v5p  https://cloud.google.com/tpu/docs/v5p  459 TFLOP/s bf16, 95 GB HBM2e, 2765 GB/s
  v6e  https://cloud.google.com/tpu/docs/v6e  918 TFLOP/s bf16, 32 GB HBM,   1638 GB/s
The capacities agree with JAX's own table (jax/_src/pallas/mosaic/tpu_info.py: 17.2e9, 34.4e9, 103e9 and 34.4e9
bytes, i.e. 16, 32, 96 and 32 GiB), so they are taken as GiB here, and v5p's as the 95 GiB the docs quote.

Google publishes no float32 peak: the MXUs multiply bfloat16. A float32 matmul or convolution at
`Precision.HIGHEST` (what sg3jax uses, for parity with the official float32 code) is computed in 6 bfloat16
passes (the `jax.lax.Precision` docstring: "On TPU: performs float32 computations in 6 bfloat16"), so its peak is
taken as bf16 / 6.
"""

import dataclasses
from typing import Optional

GiB = 2 ** 30
FP32_HIGHEST_PASSES = 6     # bf16 MXU passes per float32 product at Precision.HIGHEST (jax.lax.Precision).


@dataclasses.dataclass(frozen=True)
class Chip:
    name: str                 # generation as in topology names: 'v5e'
    device_kind: tuple        # jax Device.device_kind strings of this generation
    hbm_bytes: int            # HBM per chip
    bf16_flops: float         # peak bf16 FLOP/s per chip (MXU)
    hbm_bandwidth: float      # HBM bytes/s per chip
    source: str               # where the figures come from

    @property
    def fp32_flops(self) -> float:
        """Effective float32 FLOP/s at Precision.HIGHEST: 6 bf16 passes per product."""
        return self.bf16_flops / FP32_HIGHEST_PASSES


CHIPS = {
    'v4': Chip('v4', ('TPU v4',), 32 * GiB, 275e12, 1200e9, 'https://cloud.google.com/tpu/docs/v4'),
    'v5e': Chip('v5e', ('TPU v5 lite', 'TPU v5e'), 16 * GiB, 197e12, 819e9, 'https://cloud.google.com/tpu/docs/v5e'),
    'v5p': Chip('v5p', ('TPU v5', 'TPU v5p'), 95 * GiB, 459e12, 2765e9, 'https://cloud.google.com/tpu/docs/v5p'),
    'v6e': Chip('v6e', ('TPU v6 lite', 'TPU v6e'), 32 * GiB, 918e12, 1638e9, 'https://cloud.google.com/tpu/docs/v6e'),
}


def chip_for_device_kind(device_kind: str) -> Optional[Chip]:
    """The Chip whose jax `device_kind` is `device_kind`, or None (GPUs, CPUs, unknown TPUs)."""
    for chip in CHIPS.values():
        if device_kind in chip.device_kind:
            return chip
    return None
