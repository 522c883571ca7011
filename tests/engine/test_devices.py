"""Threads and devices of a worker (engine/devices.py, `easel worker --threads/--device/--models`): the
auto thread count by role, OMP_NUM_THREADS, cgroup quotas, threads set when a backend starts, and a
device the machine lacks refused at start."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from easel.cli import _worker_settings
from easel.engine import devices
from easel.engine.backends.diffusers import DiffusersBackend
from easel.engine.devices import auto_threads, check_device, configure_threads, system_memory, usable_cores
from easel.settings import Settings


@pytest.fixture
def restore_threads() -> Iterator[None]:
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)
    devices._applied = None


@pytest.mark.parametrize(
    ("shares", "cores", "env", "expected"),
    [
        (True, 2, {}, 1),  # `easel serve`: a core for the API
        (True, 1, {}, 1),
        (True, 8, {}, 7),
        (True, 64, {}, 16),  # capped
        (False, 2, {}, 2),  # `easel worker`: every core
        (False, 64, {}, 64),
        (True, 8, {"OMP_NUM_THREADS": "3"}, 3),  # the operator's OpenMP setting wins over auto
        (False, 8, {"OMP_NUM_THREADS": "1"}, 1),
        (False, 8, {"OMP_NUM_THREADS": "0"}, 8),  # not a thread count: ignored
        (False, 8, {"OMP_NUM_THREADS": "4,2"}, 8),  # nested lists: ignored
    ],
)
def test_auto_threads(shares: bool, cores: int, env: dict[str, str], expected: int) -> None:
    assert auto_threads(shares, cores=cores, env=env) == expected


def test_usable_cores_follow_a_cgroup_cpu_quota(tmp_path: Path) -> None:
    affinity = len(os.sched_getaffinity(0))
    assert usable_cores(tmp_path) == affinity  # no cgroup files: the affinity
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert usable_cores(tmp_path) == affinity
    (tmp_path / "cpu.max").write_text("50000 100000\n")  # --cpus=0.5
    assert usable_cores(tmp_path) == 1
    (tmp_path / "cpu.max").write_text("6400000 100000\n")  # more quota than cores
    assert usable_cores(tmp_path) == affinity


def test_system_memory_follows_a_cgroup_memory_limit(tmp_path: Path) -> None:
    ram = system_memory(tmp_path)
    assert ram is not None
    (tmp_path / "memory.max").write_text("1073741824\n")
    assert system_memory(tmp_path) == 2**30
    (tmp_path / "memory.max").write_text("max\n")
    assert system_memory(tmp_path) == ram


def test_configure_threads_sets_torch(restore_threads: None) -> None:
    assert configure_threads(2, shares_cores=True) == 2
    assert torch.get_num_threads() == 2
    assert configure_threads(1, shares_cores=False) == 1
    assert torch.get_num_threads() == 1


def test_a_backend_sets_its_threads_when_it_starts(
    restore_threads: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    torch.set_num_threads(2)
    backend = DiffusersBackend(Settings(device="cpu", torch_threads=1))
    assert backend.threads == 1 and torch.get_num_threads() == 1
    # auto in a backend of its own (the in-process worker of `easel serve`): a core left to the API
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(devices, "usable_cores", lambda: 4)
    assert DiffusersBackend(Settings(device="cpu")).threads == 3
    assert torch.get_num_threads() == 3


def test_easel_worker_resolves_its_options(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(devices, "usable_cores", lambda: 6)
    base = Settings(device="auto", worker_models=["a"])
    s = _worker_settings(base, None, None, None)
    assert (s.torch_threads, s.device, s.worker_models) == (6, "auto", ["a"])  # every core: its own process
    s = _worker_settings(base, "cuda:1", 2, "sdxl, flux-schnell")
    assert (s.torch_threads, s.device, s.worker_models) == (2, "cuda:1", ["sdxl", "flux-schnell"])
    assert _worker_settings(base.model_copy(update={"torch_threads": 5}), None, None, None).torch_threads == 5
    assert _worker_settings(base.model_copy(update={"torch_threads": 5}), None, 0, None).torch_threads == 6
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert _worker_settings(base, None, None, None).torch_threads == 1


def test_check_device() -> None:
    assert check_device("auto") is None and check_device("cpu") is None
    assert "unknown device 'gpu0'" in (check_device("gpu0") or "")
    if not torch.cuda.is_available():
        assert "has no CUDA device" in (check_device("cuda:1") or "")
    else:
        count = torch.cuda.device_count()
        assert check_device(f"cuda:{count - 1}") is None
        assert f"has {count} CUDA device(s)" in (check_device(f"cuda:{count}") or "")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_easel_worker_refuses_a_device_this_machine_lacks(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EASEL_")}
    env |= {"EASEL_DATA_DIR": str(tmp_path), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "easel", "worker", "--device", "cuda:1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert "error: device cuda:1: this machine has no CUDA device" in done.stderr
    assert not (tmp_path / "easel.db").exists()  # refused before it touched the database
