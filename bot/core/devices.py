"""Where models run and in which precision, and the lock every model build holds.

Training and generation both import from here, so they pick the same device and dtype.
"""

from __future__ import annotations

import functools
import threading
from contextlib import contextmanager, nullcontext

import torch

# Building a model is not thread-safe: `from_pretrained` sets torch's default dtype and patches
# torch's init functions for the whole process while it runs, so a training and a generation
# loading at the same time break each other (meta tensors, mixed dtypes). Every load or
# construction of a model, adapter included, holds this lock; forward passes do not need it.
MODEL_BUILD_LOCK = threading.RLock()


# Up to this many positions per row, plain attention (two matrix products and a softmax) trains
# faster on a CPU than torch's fused kernel: 3x at 128 positions, 1.6x at 256 in bf16, slower at 512
# (AMD EPYC, 2 threads, 9 heads of 64: docs/performance.md). It keeps a row's scores for the
# backward pass, which is why it stops there.
EAGER_ATTENTION_MAX_POSITIONS = 256


def training_attention(device: torch.device, block_size: int) -> str | None:
    """The attention implementation a training loads its model with (None: the library's choice)."""
    if device.type == "cpu" and block_size <= EAGER_ATTENTION_MAX_POSITIONS:
        return "eager"
    return None


def pick_device(requested: str = "auto") -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The dtype to autocast to, or None for plain fp32."""
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if precision == "fp16":
        return torch.float16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return cpu_bf16_dtype()


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU's instruction-set flags (empty where /proc/cpuinfo cannot be read)."""
    try:
        with open("/proc/cpuinfo") as f:
            line = next((ln for ln in f if ln.startswith(("flags", "Features"))), "")
    except OSError:
        return frozenset()
    return frozenset(line.split(":", 1)[-1].split())


def cpu_bf16_dtype() -> torch.dtype | None:
    """bf16 autocast pays off only on CPUs with native bf16 matrix instructions (AVX512-BF16/AMX)."""
    capability = torch.backends.cpu.get_cpu_capability()
    flags = cpu_flags()
    if ("avx512_bf16" in flags or "amx_bf16" in flags) and "AVX512" in capability:
        return torch.bfloat16
    return None


def int8_engine() -> str | None:
    """torch's quantized engine with the fastest int8 matrix kernels for this CPU, or None.

    Measured on 5-row decoding shapes: with AMX (Intel Xeon 4th gen+) oneDNN's int8 kernels are
    fastest; with AVX2/AVX-512 (AMD EPYC, older Xeons) fbgemm's are, and oneDNN's can be slower
    than bf16 there. Without AVX2 there is no int8 path worth taking: the caller keeps bf16/fp32.
    """
    engines = torch.backends.quantized.supported_engines
    flags = cpu_flags()
    if "amx_int8" in flags and "onednn" in engines:
        return "onednn"
    if "avx2" in flags:
        for engine in ("fbgemm", "x86"):
            if engine in engines:
                return engine
    return None


# Sizing the batch to a GPU (training.py). With 8 x 128-token batches a GPU waits on Python between
# steps (the H200 trained a GPT-2 persona at 14 k tokens/s); larger batches fill it. The number of
# optimizer updates is what the learning rate was measured against, so a batch grows only while a
# run keeps at least MIN_UPDATES of them, and only as far as half the GPU's memory allows.
MIN_UPDATES = 200
MAX_BATCH_ROWS = 128
# Training memory per token of a GPT-2-124M-sized model in bf16 (activations kept for backward plus
# the fp32 logits over 50,257 tokens): about 0.5 MB; twice that keeps headroom for larger bases.
BYTES_PER_TRAINING_TOKEN = 1 << 20


def fitted_batch_size(
    requested: int, rows_per_epoch: int, epochs: int, block_size: int, memory_bytes: int | None
) -> int:
    """The largest power-of-two multiple of `requested` rows per step that still gives MIN_UPDATES
    updates over the run and fits in half of `memory_bytes` (None: not a GPU, the batch stays)."""
    if memory_bytes is None:
        return requested
    memory_rows = memory_bytes // 2 // (block_size * BYTES_PER_TRAINING_TOKEN)
    batch = requested
    while True:
        bigger = batch * 2
        updates = -(-rows_per_epoch // bigger) * epochs
        if bigger > min(MAX_BATCH_ROWS, memory_rows) or updates < MIN_UPDATES:
            return batch
        batch = bigger


def gpu_memory_bytes(device: torch.device) -> int | None:
    """A CUDA device's memory (None elsewhere). Its total, not what is free now: the batch it sizes
    is part of a run's checkpoint fingerprint, so a resumed run on the same GPU gets the same one."""
    if device.type != "cuda":
        return None
    return int(torch.cuda.get_device_properties(device).total_memory)


def autocast(device: torch.device, dtype: torch.dtype | None):
    return torch.autocast(device_type=device.type, dtype=dtype) if dtype is not None else nullcontext()


def fused_optimizer(device: torch.device, params: list[torch.nn.Parameter]) -> bool:
    """AdamW's fused kernel (one pass over each tensor instead of a dozen element-wise ops; on the
    CPU a fifth of a full fine-tune's step, measured) where torch has it for these parameters."""
    return device.type in ("cpu", "cuda") and all(
        p.dtype in (torch.float32, torch.float16, torch.bfloat16) for p in params
    )


# glibc's malloc hands every allocation over 32 MB straight back to the kernel when it is freed, and
# a training step allocates several such tensors (the logits of a 49,152-token vocabulary for 1,024
# positions are 100-200 MB, and their gradients): each step then page-faults and zeroes them afresh.
# Measured on SmolLM2-135M (bench/train_speed.py, docs/performance.md) that was a third of a step.
# While a training runs, freed memory is kept for reuse; when the last one ends it goes back.
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # mallopt's parameters (malloc.h)
_DEFAULT_TRIM_THRESHOLD, _DEFAULT_MMAP_MAX = 128 * 1024, 65536
_reusing = {"count": 0}
_reusing_lock = threading.Lock()


@functools.lru_cache(maxsize=1)
def _glibc():
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
    except OSError:  # not glibc (musl, macOS): nothing to tune
        return None


@contextmanager
def reusing_freed_memory():
    """Keep freed memory in the process for the next allocation while a training runs."""
    libc = _glibc()
    with _reusing_lock:
        _reusing["count"] += 1
        if libc is not None and _reusing["count"] == 1:
            libc.mallopt(_M_MMAP_MAX, 0)
            libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1)
    try:
        yield
    finally:
        with _reusing_lock:
            _reusing["count"] -= 1
            if libc is not None and _reusing["count"] == 0:
                libc.mallopt(_M_MMAP_MAX, _DEFAULT_MMAP_MAX)
                libc.mallopt(_M_TRIM_THRESHOLD, _DEFAULT_TRIM_THRESHOLD)
                libc.malloc_trim(0)
