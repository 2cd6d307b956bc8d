"""Which floating-point precision a run trains in: ``training.precision: auto`` made concrete.

bf16 autocast pays where the hardware multiplies bf16 natively: on a CPU whose
flags report AMX-BF16 or AVX512-BF16 (oneDNN then runs the convolutions in
bf16), and on a CUDA GPU that supports bf16. Elsewhere autocast would emulate
it and run slower, so ``auto`` trains in float32. The objectives stay in float32
either way (:func:`sematlas.models.losses.no_autocast`). Whether bf16 pays also
depends on the model (``benchmarks/model_benchmark.py`` measures it per
variant): the variants in ``training.fp32_variants`` keep float32 under ``auto``.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from functools import lru_cache
from pathlib import Path

import torch

from sematlas.core.params import TrainingParams

_log = logging.getLogger(__name__)

#: CPU flags (``/proc/cpuinfo``) of native bf16 arithmetic.
BF16_CPU_FLAGS = frozenset({"amx_bf16", "avx512_bf16"})

BF16 = "bf16-mixed"
FP32 = "32-true"


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The flags of this machine's CPU as Linux reports them (empty where there is no ``/proc/cpuinfo``)."""
    info = Path("/proc/cpuinfo")
    if not info.is_file():
        return frozenset()
    for line in info.read_text().splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def _cuda_has_bf16() -> bool:
    return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())


def resolve_precision(
    requested: str,
    accelerator: str,
    variant: str | None = None,
    fp32_variants: Collection[str] = (),
    flags: Collection[str] | None = None,
) -> str:
    """The Lightning ``precision`` a run trains with.

    Parameters
    ----------
    requested : str
        ``training.precision``: ``auto``, or a Lightning precision (``32-true``, ``bf16-mixed``...)
        that is used as it is.
    accelerator : str
        ``training.accelerator`` (``cpu``, ``gpu``, ``cuda`` or ``auto``).
    variant : str, optional
        The model trained; under ``auto`` one of ``fp32_variants`` trains in float32.
    fp32_variants : collection of str
        Variants measured slower in bf16 (``training.fp32_variants``).
    flags : collection of str, optional
        CPU flags; default :func:`cpu_flags` (a test passes a machine's flags).

    Returns
    -------
    str
        ``bf16-mixed`` or ``32-true`` for ``auto``, else ``requested``.
    """
    if requested != "auto":
        return requested
    if variant is not None and variant in fp32_variants:
        return FP32
    on_gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    if on_gpu:
        return BF16 if _cuda_has_bf16() else FP32
    cpu = cpu_flags() if flags is None else frozenset(flags)
    return BF16 if cpu & BF16_CPU_FLAGS else FP32


def run_precision(training: TrainingParams, variant: str | None) -> str:
    """:func:`resolve_precision` of a profile's ``training`` section for one variant, logged."""
    precision = resolve_precision(training.precision, training.accelerator, variant, training.fp32_variants)
    if training.precision == "auto":
        _log.info("%s: precision auto -> %s", variant or "run", precision)
    return precision


__all__ = ["BF16", "BF16_CPU_FLAGS", "FP32", "cpu_flags", "resolve_precision", "run_precision"]
