"""virtnet-poll-monitor on this host: its inputs (interface, /proc/interrupts) and its
program on this kernel.  Its counts are to be checked against a real virtio-net NIC in the
lab guest by tests/lab/virtio_checks.py (not yet run: docs/lab.md); its rules and the import
of its file: tests/test_guest_import.py."""

from __future__ import annotations

import os

import pytest

from probes.virtnet_poll import irq_counts, rx_vectors, virtio_devices
from tests.netenv import ProbeProcess, probe_refusal

root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")

INTERRUPTS = """\
           CPU0       CPU1
 24:          0          0  PCI-MSIX-0000:00:03.0   0-edge      virtio2-config
 25:         12       1400  PCI-MSIX-0000:00:03.0   1-edge      virtio2-input.0
 26:        300          0  PCI-MSIX-0000:00:03.0   2-edge      virtio2-output.0
 27:          7          8  PCI-MSIX-0000:00:03.0   3-edge      virtio2-input.1
 28:          0          0  PCI-MSIX-0000:00:04.0   1-edge      virtio12-input.0
 30:          5          5  PCI-MSI-0000:00:05.0   0-edge      virtio3-virtqueues
NMI:          0          0   Non-maskable interrupts
"""


def fake_nic(tmp_path, name: str, vdev: str, driver: str = "virtio_net"):
    (tmp_path / "devices" / vdev).mkdir(parents=True)
    (tmp_path / "drivers" / driver).mkdir(parents=True, exist_ok=True)
    (tmp_path / "devices" / vdev / "driver").symlink_to(tmp_path / "drivers" / driver)
    (tmp_path / "net" / name).mkdir(parents=True)
    (tmp_path / "net" / name / "device").symlink_to(tmp_path / "devices" / vdev)
    return tmp_path / "net"


def test_rx_vectors_are_the_devices_input_lines_only(tmp_path):
    net = fake_nic(tmp_path, "eth0", "virtio2")
    fake_nic(tmp_path, "eth1", "virtio3")
    # virtio12-input.0 is another device's (a prefix match would take it); output.0 is TX.
    assert rx_vectors("eth0", INTERRUPTS, net) == {25: 0, 27: 1}
    assert rx_vectors("eth1", INTERRUPTS, net) == {}  # one shared vector: not per queue
    assert rx_vectors("gone0", INTERRUPTS, net) == {}
    assert virtio_devices(net) == ["eth0", "eth1"]


def test_irq_counts_sum_the_cpus():
    counts = irq_counts(INTERRUPTS)
    assert counts[25] == 1412 and counts[27] == 15 and "NMI" not in counts


@root
@pytest.mark.parametrize("device, expected", [
    ("lo", "--device: 'lo' is not valid; expected a virtio-net interface (this one's driver is none)"),
    ("nosuch0", "--device: 'nosuch0' is not valid; expected an existing interface"),
])
def test_a_device_that_is_not_virtio_net_is_one_clear_line(device, expected):
    assert expected in probe_refusal("virtnet-poll-monitor", "--device", device)


@root
@pytest.mark.bpf
@pytest.mark.skipif(not virtio_devices(), reason="no virtio-net interface on this host")
def test_the_program_loads_and_detaches_on_this_kernel():
    """Compiled against this kernel's BTF (virtio-net built in here), attached, detached.
    Nothing is sent: the records, if any, are the interface's own traffic."""
    device = virtio_devices()[0]
    p = ProbeProcess("virtnet-poll-monitor", "--device", device, "-i", "0.5", "-d", "1.5", "--json")
    records = p.wait(timeout=60)
    assert p.returncode == 0, p.stderr
    for r in records:
        assert r["type"] == "virtnet_poll" and r["device"] == device and r["kernel"] == os.uname().release
        assert r["budget_exhausted"] <= r["polls"] and r["max_work"] <= r["budget"]
