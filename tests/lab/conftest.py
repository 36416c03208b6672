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

GUEST_TIMEOUT_S = 900


@pytest.fixture(scope="session")
def lab(tmp_path_factory) -> dict:
    mode = os.environ.get("NETSLEUTH_LAB", "require")
    if mode == "skip":
        pytest.skip("NETSLEUTH_LAB=skip")
    try:
        start = time.monotonic()
        image = ensure_image()
        image_s = time.monotonic() - start
        guest = run("python3 -m tests.lab.guest_checks /lab/results.json", timeout=GUEST_TIMEOUT_S,
                    results=tmp_path_factory.mktemp("lab"), image=image)
    except LabUnavailable as e:
        if mode == "require":
            pytest.fail(f"lab VM unavailable: {e} (NETSLEUTH_LAB=auto skips the lab tests on such a host)")
        pytest.skip(f"lab VM unavailable on this host: {e}")
    path = guest.results / "results.json"
    assert guest.exit_status == 0 and path.exists(), guest.explain()
    results = json.loads(path.read_text())
    results["host"] = {"image_s": round(image_s, 1), "boot_s": guest.boot_s, "guest_wall_s": round(guest.wall_s, 1),
                       "kernel": image.release, "explain": guest.explain()}
    print(f"\n[lab] image ready in {image_s:.1f} s, boot {guest.boot_s} s, guest run {guest.wall_s:.1f} s; "
          f"steps {results['steps']}")
    return results

