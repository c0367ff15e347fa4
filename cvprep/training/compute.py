"""What a model asks of the CPU, and what the CPU can give: FLOPs counted from a Keras
model's layers, the CPU's peak from its flags, and the training precision it supports.

The figures feed ``benchmarks/train_speed.py`` (achieved GFLOP/s against the peak) and the
``auto`` choice of ``--precision``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CPUINFO = Path("/proc/cpuinfo")
PROC_STAT = Path("/proc/stat")
# FP32 FLOPs per cycle and core: a 16-lane (AVX-512) or 8-lane (AVX2) fused multiply-add
# (2 FLOPs a lane) on two FMA ports, as Intel's Xeons of the Skylake-SP generation onwards
# have. One-FMA-port parts (some Xeon Silver/Bronze) reach half: pass the peak explicitly.
FLOP_PER_CYCLE = (("avx512f", 64), ("avx2", 32), ("sse2", 8))
# AMD's cores are narrower than their flags: Zen and Zen+ (and Hygon's Dhyana, a Zen) split
# a 256-bit FMA into two 128-bit halves; Zen 2 to Zen 4 have two 256-bit FMA pipes, Zen 4
# running AVX-512 as two 256-bit halves; Zen 5 (family 0x1a) has 512-bit pipes on desktop and
# server parts, 256-bit ones on the laptop parts (Strix and Krackan Point: models 0x20-0x2f
# and 0x60-0x6f). Zen 2 was the first with ``clwb``, which tells it from a Zen in a VM that
# reports a generic family 0x17, model 1.
AMD_VENDORS = ("AuthenticAMD", "HygonGenuine")
AMD_ZEN2_FIRST_MODEL = 0x30
AMD_ZEN5_FAMILY = 0x1A
AMD_ZEN5_256_BIT_MODELS = (range(0x20, 0x30), range(0x60, 0x70))
NATIVE_BF16 = ("avx512_bf16", "amx_bf16")
PRECISIONS = ("auto", "float32", "bfloat16")
# What ``auto`` picks on a CPU with native BF16. The issue adopts bfloat16 only where it is
# measured faster at equal validation accuracy (±0.005); no such CPU was available to
# measure it, and TensorFlow runs the elementwise ops around the convolutions (batch
# normalisation, activations, pooling, the optimizer's casts) on generic kernels, so the
# gain is not certain: float32 until a measurement on BF16 hardware says otherwise (README).
AUTO_ON_NATIVE_BF16 = "float32"


@dataclass(frozen=True)
class CpuPeak:
    """The CPU's FP32 peak and how it was worked out (printed next to every fraction)."""

    cores: int
    ghz: float
    flop_per_cycle: int
    basis: str  # the instructions and FMA units the FLOPs per cycle rest on

    @property
    def gflops(self) -> float:
        return self.cores * self.ghz * self.flop_per_cycle

    def describe(self) -> str:
        return (
            f"{self.cores} cores × {self.ghz:.2f} GHz × {self.flop_per_cycle} FP32 FLOP/cycle "
            f"({self.basis}) = {self.gflops:.0f} GFLOP/s"
        )


def cpu_flags(text: str | None = None) -> frozenset[str]:
    """The instruction-set flags of the first CPU in ``/proc/cpuinfo`` (or ``text``);
    empty where there is none (macOS, Windows)."""
    if text is None:
        try:
            text = CPUINFO.read_text()
        except OSError:
            return frozenset()
    match = re.search(r"^flags\s*:(.*)$", text, re.MULTILINE)
    return frozenset(match.group(1).split()) if match else frozenset()


def has_native_bf16(flags: Iterable[str]) -> bool:
    """Whether the CPU computes BF16 dot products in hardware (AVX512-BF16 or AMX).

    >>> has_native_bf16({"avx512f", "avx512_bf16"}), has_native_bf16({"avx512f"})
    (True, False)
    """
    return any(flag in set(flags) for flag in NATIVE_BF16)


def usable_cores() -> int:
    """Cores this process may run on (the affinity mask, else ``os.cpu_count()``)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@dataclass(frozen=True)
class CpuTicks:
    """All CPUs' time since boot in ticks (``/proc/stat``'s first line), and the part of it
    a virtual machine's hypervisor gave to other guests ("steal"): an epoch slowed down by
    its neighbours says so in the benchmarks instead of passing for a slower epoch."""

    stolen: int
    total: int

    def stolen_share_since(self, earlier: CpuTicks) -> float:
        """The share of the CPUs' time stolen between ``earlier`` and this reading."""
        elapsed = self.total - earlier.total
        return (self.stolen - earlier.stolen) / elapsed if elapsed > 0 else 0.0


def cpu_ticks(text: str | None = None) -> CpuTicks | None:
    """The CPUs' ticks from ``/proc/stat`` (or ``text``); None where it cannot be read."""
    if text is None:
        try:
            text = PROC_STAT.read_text()
        except OSError:
            return None
    fields = text.split("\n", 1)[0].split()
    if not fields or fields[0] != "cpu" or len(fields) < 9:
        return None  # steal is the 8th counter (Linux 2.6.11 onwards)
    # user nice system idle iowait irq softirq steal; guest time is already in user and nice.
    # All CPUs of the machine, not only this process's: the hypervisor steals from the VM.
    try:
        ticks = [int(value) for value in fields[1:9]]
    except ValueError:
        return None
    return CpuTicks(stolen=ticks[7], total=sum(ticks))


def cpu_ghz(text: str | None = None) -> float:
    """The nominal clock: the ``@ 2.80GHz`` of the model name, else the current MHz."""
    if text is None:
        try:
            text = CPUINFO.read_text()
        except OSError:
            return 0.0
    named = re.search(r"^model name\s*:.*@\s*([\d.]+)\s*GHz", text, re.MULTILINE)
    if named:
        return float(named.group(1))
    current = re.search(r"^cpu MHz\s*:\s*([\d.]+)", text, re.MULTILINE)
    return float(current.group(1)) / 1000 if current else 0.0


def _cpuinfo_number(text: str, key: str) -> int | None:
    match = re.search(rf"^{key}\s*:\s*(\d+)\s*$", text, re.MULTILINE)
    return int(match.group(1)) if match else None


def flop_per_cycle(text: str) -> tuple[int, str]:
    """FP32 FLOPs per cycle and core of the first CPU in ``text`` (``/proc/cpuinfo``), and
    what they rest on: the widest vector instructions it has, for AMD narrowed to the width
    of its FMA pipes (a Zen 4 has AVX-512 but computes it 256 bits at a time).

    >>> flop_per_cycle("vendor_id : AuthenticAMD\\ncpu family : 25\\nflags : avx2 avx512f clwb")
    (32, 'avx512f on 256-bit FMA pipes (AuthenticAMD family 0x19)')
    """
    flags = cpu_flags(text)
    name, per_cycle = next(((f, n) for f, n in FLOP_PER_CYCLE if f in flags), ("scalar", 2))
    vendor = next((v for v in AMD_VENDORS if v in text), None)
    if vendor is None or per_cycle < 32:
        return per_cycle, f"{name}, two FMA units assumed"
    family = _cpuinfo_number(text, "cpu family") or 0
    model = _cpuinfo_number(text, "model") or 0
    zen1 = family <= 0x17 and model < AMD_ZEN2_FIRST_MODEL and "clwb" not in flags
    if vendor == "HygonGenuine" or zen1:
        bits = 128
    elif family < AMD_ZEN5_FAMILY or any(model in r for r in AMD_ZEN5_256_BIT_MODELS):
        bits = 256
    else:
        bits = 512
    per_cycle = min(per_cycle, 2 * 2 * bits // 32)  # two FMA pipes, 2 FLOPs a 32-bit lane
    return per_cycle, f"{name} on {bits}-bit FMA pipes ({vendor} family {family:#x})"


def cpu_peak(text: str | None = None, cores: int | None = None) -> CpuPeak:
    """The FP32 peak of the usable cores, from ``/proc/cpuinfo`` (or ``text``).

    >>> info = "model name : Xeon @ 2.80GHz\\nflags : fpu avx2 avx512f"
    >>> cpu_peak(info, cores=2).gflops
    358.4
    """
    if text is None:
        try:
            text = CPUINFO.read_text()
        except OSError:
            text = ""
    per_cycle, basis = flop_per_cycle(text)
    return CpuPeak(cores or usable_cores(), cpu_ghz(text), per_cycle, basis)


def resolve_precision(precision: str, flags: Iterable[str] | None = None) -> str:
    """``float32`` or ``bfloat16``: ``auto`` resolved for this CPU (or ``flags``).

    ``auto`` is ``float32`` where the CPU has no BF16 instructions (bfloat16 is emulated
    there: slower, see ``benchmarks/train_speed.py``), and :data:`AUTO_ON_NATIVE_BF16`
    where it has them.

    >>> resolve_precision("auto", {"avx512f"}), resolve_precision("bfloat16", {"avx512f"})
    ('float32', 'bfloat16')
    """
    if precision != "auto":
        return precision
    native = has_native_bf16(cpu_flags() if flags is None else flags)
    return AUTO_ON_NATIVE_BF16 if native else "float32"


@contextmanager
def dtype_policy(precision: str) -> Iterator[None]:
    """Keras layers made inside compute in ``precision`` (``bfloat16``: Keras'
    ``mixed_bfloat16``, variables stay float32); the global policy is restored after, so
    nothing leaks into later Keras use in the process."""
    import keras

    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16" if precision == "bfloat16" else "float32")
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


# --------------------------------------------------------------------------- model FLOPs
def forward_flops(model: Any) -> dict[str, int]:
    """Forward FLOPs per image of each convolution and dense layer (2 per multiply-add),
    from the layers' own shapes; nested models are walked. Pooling, normalisation and
    activations are left out: they are a few per cent of a CNN's arithmetic.

    >>> import keras
    >>> x = keras.Input((8, 8, 3))
    >>> y = keras.layers.Conv2D(4, 3, padding="same", name="c")(x)
    >>> forward_flops(keras.Model(x, y))  # 8·8 outputs × 4 filters × 3·3·3 taps × 2
    {'c': 13824}
    """
    import keras

    counts: dict[str, int] = {}
    for layer in leaf_layers(model):
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            height, width, channels = layer.output.shape[1:]
            taps = layer.kernel_size[0] * layer.kernel_size[1]
            counts[layer.name] = 2 * height * width * channels * taps
        elif isinstance(layer, keras.layers.Conv2D):
            height, width, filters = layer.output.shape[1:]
            inputs = layer.input.shape[-1] // layer.groups
            taps = layer.kernel_size[0] * layer.kernel_size[1] * inputs
            counts[layer.name] = 2 * height * width * filters * taps
        elif isinstance(layer, keras.layers.Dense):
            counts[layer.name] = 2 * layer.input.shape[-1] * layer.units
    return counts


def leaf_layers(model: Any) -> list[Any]:
    leaves = []
    for layer in model.layers:
        leaves.extend(leaf_layers(layer) if hasattr(layer, "layers") else [layer])
    return leaves


def training_flops(model: Any) -> int:
    """FLOPs per training image: 3× the forward FLOPs of trainable layers (the backward pass
    computes the gradient of the input and of the weights, each costing about a forward
    pass), 1× for frozen layers below the first trainable one (nothing flows back through
    them), 2× for frozen layers above it (only the input gradient)."""
    total, seen_trainable = 0, False
    forward = forward_flops(model)
    for layer in leaf_layers(model):
        flops = forward.get(layer.name, 0)
        trainable = layer.trainable and bool(layer.trainable_weights)
        if trainable:
            total += 3 * flops
            seen_trainable = True
        else:
            total += (2 if seen_trainable else 1) * flops
    return total
