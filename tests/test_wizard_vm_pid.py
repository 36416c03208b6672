"""The interactive wizard fills the VM's QEMU pid from its tap, as the autopilot does
(wizard/hostvalues.py): two real QEMUs on this host (paused at reset, no guest code runs),
each holding a tap it created; the user names one tap and no pid."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from contextlib import ExitStack, contextmanager

import pytest

from tests.wizard_pilot import SIZE, choose, flat_text, pick, wait_for, wait_screen
from wizard.app import NetsleuthApp
from wizard.backends import LiveBackend
from wizard.screens.context import ContextScreen
from wizard.screens.preflight import PreflightScreen
from wizard.screens.step import StepScreen
from wizard.screens.symptom import SymptomScreen
from wizard.session import read_journal

pytestmark = [pytest.mark.asyncio,
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create taps"),
              pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="qemu not installed")]


@contextmanager
def qemu_with_tap(name: str, tap: str):
    """A real QEMU that created ``tap`` (`-netdev tap,ifname=`); yields its pid."""
    proc = subprocess.Popen(
        ["qemu-system-x86_64", "-name", f"guest={name}", "-S", "-display", "none", "-nodefaults", "-M", "q35",
         "-accel", "tcg", "-m", "32", "-netdev", f"tap,id=n0,ifname={tap},script=no,downscript=no",
         "-device", "virtio-net-pci,netdev=n0"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 20
        while not os.path.exists(f"/sys/class/net/{tap}"):
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "qemu did not create its tap"
            time.sleep(0.1)
        yield proc.pid
    finally:
        proc.kill()
        proc.wait()


async def test_the_qemu_pid_comes_from_the_tap_says_so_and_can_be_changed(tmp_path):
    tag = uuid.uuid4().hex[:5]
    names, taps = (f"vmwk{tag}a", f"vmwk{tag}b"), (f"vmwk{tag}a", f"vmwk{tag}b")
    with ExitStack() as stack:
        pid_a, pid_b = (stack.enter_context(qemu_with_tap(n, t)) for n, t in zip(names, taps))
        app = NetsleuthApp(LiveBackend(), tmp_path / "sessions")
        async with app.run_test(size=SIZE) as pilot:
            await wait_screen(pilot, PreflightScreen)
            await wait_for(pilot, lambda: not pilot.app.screen.query_one("#continue").disabled, 60, "preflight")
            await pilot.press("enter")
            await wait_screen(pilot, SymptomScreen)
            row = next(i for i, r in enumerate(app.lib.quick_reference) if r.problem == "vhost slow")
            await pick(pilot, "#symptoms", f"quick:{row}")
            await wait_screen(pilot, ContextScreen)
            await choose(pilot, "f-vm_interface", taps[0])  # the tap; the pid field left empty
            await pilot.press("ctrl+n")
            step = await wait_screen(pilot, StepScreen)
            assert app.walk.context["vm_pid"] == pid_a
            # No kprobes here: the vhost Summary cannot run, and with the pid known its QEMU's
            # CPU (cpu-burst on that pid) is offered first instead.
            assert step.view.ref == "vm-network/vhost-eventfd-count" and step.view.unavailable
            assert [a.ref for a in step.alternatives][:2] == ["vm-network/qemu-cpu-burst", "vm-network/qemu-offcpu"]
            await pilot.press("ctrl+r")
            step = await wait_screen(pilot, StepScreen)
            assert step.view.ref == "vm-network/qemu-cpu-burst"
            assert step.form().values()["pid"] == str(pid_a)
            text = flat_text(app)
            assert (f"From this host: --pid {pid_a}: the QEMU process holding {taps[0]} (VM {names[0]}), found on "
                    "this host; change it below if that is not the one") in text, text
            assert f"--pid {pid_a}" in str(step.query_one("#command-line").render())

            await choose(pilot, "f-pid", str(pid_b))  # the user knows better: the other VM
            await wait_for(pilot, lambda: f"--pid {pid_b}" in str(step.query_one("#command-line").render()),
                           what="the command with the changed pid")
            assert not step.query_one("#found-here").display  # no longer the host's value
            session = app.session.path
            await pilot.press("ctrl+q")
    header, _ = read_journal(session)
    assert header["host"]["found_here"] == f"vm_pid = {pid_a} (the QEMU process holding {taps[0]} (VM {names[0]}))"
