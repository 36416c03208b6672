"""Shared by every test: no BPF program of a test outlives it.

Tests marked ``bpf`` compare the programs held by this process and its children
(bpftool) before and after: one that appeared during the test and is still loaded
once it is over was left behind by a probe.  Programs of other processes (another
test run on the machine) are not this run's.
"""

from __future__ import annotations

import os
import shutil
import time

import pytest

from tests.netenv import loaded_bpf_programs


@pytest.fixture(autouse=True)
def no_bpf_program_left_behind(request):
    if request.node.get_closest_marker("bpf") is None or os.geteuid() != 0 or not shutil.which("bpftool"):
        yield
        return
    before = loaded_bpf_programs(mine_only=True)
    yield
    left = loaded_bpf_programs(mine_only=True) - before
    deadline = time.monotonic() + 2.0
    while left and time.monotonic() < deadline:  # a program is freed once its last fd closes
        time.sleep(0.1)
        left = loaded_bpf_programs(mine_only=True) - before
    assert not left, f"BPF programs still loaded after the test: {sorted(left)} (bpftool prog show id ...)"
