"""One lab guest run per test session, shared by every tests/lab/test_lab_*.py.

The guest boots once and runs tests/lab/guest_checks.py, which creates every
fault and writes what it saw to results.json; the tests here assert on it.

NETSLEUTH_LAB=require (default): a host that cannot build or boot the lab (not
root, no route to Debian's mirrors, no qemu) fails the lab tests, so that the
README's test command and CI are the same command and the kprobe/OVS paths are
never silently untested; NETSLEUTH_LAB=auto skips them there, with the reason;
NETSLEUTH_LAB=skip skips them.
"""

from __future__ import annotations

import json
import os
import time

import pytest

from tests.lab.build import LabUnavailable, ensure_image
from tests.lab.runner import run

GUEST_TIMEOUT_S = 1200  # the starvation scenarios' autopilot walks added ~5 min (docs/lab.md)
VM_GUEST_TIMEOUT_S = 900


def guest_run(tmp_path_factory, module: str, results_name: str, timeout: float, args: str = "",
              **run_kw) -> dict:
    """Boot the lab guest once, run ``python3 -m <module>``, return its results JSON."""
    mode = os.environ.get("NETSLEUTH_LAB", "require")
    if mode == "skip":
        pytest.skip("NETSLEUTH_LAB=skip")
    try:
        start = time.monotonic()
        image = ensure_image()
        image_s = time.monotonic() - start
        guest = run(f"python3 -m {module} /lab/{results_name} {args}", timeout=timeout,
                    results=tmp_path_factory.mktemp("lab"), image=image, **run_kw)
    except LabUnavailable as e:
        if mode == "require":
            pytest.fail(f"lab VM unavailable: {e} (NETSLEUTH_LAB=auto skips the lab tests on such a host)")
        pytest.skip(f"lab VM unavailable on this host: {e}")
    # A kernel oops, BUG, hung task or RCU stall fails the run, whatever the checks say.
    assert not guest.kernel_problems, f"the lab guest's kernel complained:\n{guest.kernel_problems}\n{guest.explain()}"
    path = guest.results / results_name
    assert guest.exit_status == 0 and path.exists(), guest.explain()
    results = json.loads(path.read_text())
    results["host"] = {"image_s": round(image_s, 1), "boot_s": guest.boot_s, "guest_wall_s": round(guest.wall_s, 1),
                       "kernel": image.release, "explain": guest.explain()}
    print(f"\n[lab] {module}: image ready in {image_s:.1f} s, boot {guest.boot_s} s, guest run {guest.wall_s:.1f} s; "
          f"steps {results['steps']}")
    return results


@pytest.fixture(scope="session")
def lab(tmp_path_factory) -> dict:
    return guest_run(tmp_path_factory, "tests.lab.guest_checks", "results.json", GUEST_TIMEOUT_S)


@pytest.fixture(scope="session")
def vmlab(tmp_path_factory) -> dict:
    """The VM path's checks against a nested VM (tests/lab/vm_checks.py), a boot of its own;
    also the guest side, on the lab guest's own virtio-net NICs (tests/lab/virtio_checks.py)."""
    results = guest_run(tmp_path_factory, "tests.lab.vm_checks", "vm_results.json", VM_GUEST_TIMEOUT_S,
                        virtio_nics=True)
    if results.get("nesting_unavailable"):
        pytest.fail(f"the lab guest cannot run a nested VM: {results['nesting_unavailable']}")
    return results



# The soak's size in CI; a longer one on demand (NETSLEUTH_SOAK_CYCLES=1000, docs/lab.md).
SOAK_CYCLES = int(os.environ.get("NETSLEUTH_SOAK_CYCLES", "60"))


@pytest.fixture(scope="session")
def soaklab(tmp_path_factory) -> dict:
    """The attach/detach soak (tests/lab/soak.py), a boot of its own.  Single-threaded TCG:
    multi-threaded TCG crashes the guest in kernel text patching (docs/lab.md)."""
    timeout = 300 + SOAK_CYCLES * 10  # ~4 s a cycle on a quiet host; 9 s seen under load
    return guest_run(tmp_path_factory, "tests.lab.soak", "soak.json", timeout,
                     f"--cycles {SOAK_CYCLES} --kills 2", tcg=os.environ.get("NETSLEUTH_LAB_TCG", "single"))
