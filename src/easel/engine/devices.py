"""What a worker may use of its machine: CPU threads, the device, the memory for loaded models.

- **Threads.** torch's CPU kernels fork-join over OpenMP threads that spin while they wait for each
  other; with more threads than free cores (the API server in the same process, another worker, a
  training run) every parallel region waits for a descheduled thread, and a 0.8 s image takes 15-30 s
  (docs/performance.md). `torch_threads` (EASEL_TORCH_THREADS, `easel worker --threads`) sets them; auto
  is OMP_NUM_THREADS when that is set, else the usable cores less one where the worker shares its
  process with the API (`easel serve`), all of them in a process of its own (`easel worker`). Usable
  cores: the process's CPU affinity, and a cgroup (container) CPU quota when there is one.
- **Devices.** `check_device` refuses, at start, a device this machine does not have.
- **Memory.** `device_memory` is what a budget share (EASEL_MODEL_MEMORY, engine/backends/cache.py) is
  a share of: a CUDA device's total memory, MPS's recommended working set, else the RAM (or a cgroup
  memory limit).

torch is imported only inside the functions that need it, never at import time.
"""

from __future__ import annotations

import logging
import math
import os
import re
import threading
from contextlib import suppress
from pathlib import Path

log = logging.getLogger(__name__)

_CGROUP = Path("/sys/fs/cgroup")
_lock = threading.Lock()
_applied: int | None = None  # the thread count set in this process (torch threads are process-wide)


def usable_cores(cgroup: Path = _CGROUP) -> int:
    """The cores this process may run on: its CPU affinity, at most the cgroup v2 CPU quota (cpu.max,
    rounded up) when the process is limited by one (a container started with --cpus)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cores = os.cpu_count() or 1
    try:
        quota, period = (cgroup / "cpu.max").read_text().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cores)


def auto_threads(shares_cores: bool, cores: int | None = None, env: dict[str, str] | None = None) -> int:
    """The torch threads of a worker that sets none: OMP_NUM_THREADS when it is a positive number, else
    `cores` (default: usable_cores()) less one when the worker shares its process's cores with the API
    (at least 1, at most 16), all of them otherwise."""
    environ = os.environ if env is None else env
    omp = environ.get("OMP_NUM_THREADS", "").strip()
    if re.fullmatch(r"[1-9]\d*", omp):
        return int(omp)
    n = usable_cores() if cores is None else cores
    return max(1, min(n - 1, 16)) if shares_cores else max(1, n)


def configure_threads(requested: int, shares_cores: bool) -> int:
    """Set torch's intra-op threads (and inter-op threads, when torch still allows it: only before its
    first parallel work) for this process: `requested`, or auto_threads() when it is 0. Returns the
    number set. Threads are per process: the last worker engine to start in a process sets them."""
    global _applied
    import torch

    n = requested or auto_threads(shares_cores)
    with _lock:
        if _applied == n and torch.get_num_threads() == n:
            return n
        torch.set_num_threads(n)
        with suppress(RuntimeError):  # inter-op work already started (or set before): it keeps its pool
            torch.set_num_interop_threads(n)
        _applied = n
    how = "set" if requested else ("OMP_NUM_THREADS" if "OMP_NUM_THREADS" in os.environ else "auto")
    log.info("torch threads: %d (%s; %d usable cores)", n, how, usable_cores())
    return n


def check_device(device: str) -> str | None:
    """Why this machine cannot run on `device` ("cuda:3" on a host with two GPUs, "cuda" without CUDA),
    None when it can. "auto" and "cpu" always can, and are answered without importing torch."""
    if device in ("auto", "cpu"):
        return None
    m = re.fullmatch(r"(cuda|mps)(?::(\d+))?", device)
    if m is None:
        return f"unknown device {device!r}: use auto, cpu, cuda, cuda:N (N from 0) or mps"
    import torch

    kind, index = m[1], int(m[2] or 0)
    if kind == "cuda":
        if not torch.cuda.is_available():
            return f"device {device}: this machine has no CUDA device (torch {torch.__version__})"
        count = torch.cuda.device_count()
        if index >= count:
            return f"device {device}: this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}"
    else:
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available() or index:
            return f"device {device}: this machine has no MPS device (use mps, on Apple silicon)"
    return None


def system_memory(cgroup: Path = _CGROUP) -> int | None:
    """This machine's RAM in bytes, at most the cgroup v2 memory limit (memory.max) when there is one."""
    try:
        ram: int | None = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        ram = None
    try:
        limit = (cgroup / "memory.max").read_text().strip()
        if limit != "max":
            ram = int(limit) if ram is None else min(ram, int(limit))
    except (OSError, ValueError):
        pass
    return ram


def device_memory(device: str) -> int | None:
    """The memory a device has for models: a CUDA device's total memory, MPS's recommended maximum
    working set, the RAM (system_memory) for the CPU; None when it cannot be told."""
    if device.startswith(("cuda", "mps")):
        import torch

        if device.startswith("cuda") and torch.cuda.is_available():
            return int(torch.cuda.get_device_properties(torch.device(device)).total_memory)
        if device.startswith("mps") and getattr(torch, "mps", None) is not None:
            try:
                return int(torch.mps.recommended_max_memory())
            except (AttributeError, RuntimeError):
                return None
        return None
    return system_memory()
