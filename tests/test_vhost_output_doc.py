"""docs/output-virt.md documents exactly the fields the vhost probes emit; their programs pass
this kernel's verifier.

This host has no vhost modules, so the module-private offsets are the lab kernel's
(Debian 6.1, read from its module BTF), given by hand here only to compile; the
addresses of the work functions are stand-ins.  The programs are loaded (not
attached: no kprobes here) and read through their real maps, a few values written
into them by hand.  Real records from a real VM are checked in the lab
(tests/lab/test_lab_vm_vhost.py).
"""

from __future__ import annotations

import ctypes as ct
import os
from pathlib import Path

import pytest

from probes import vhost_common
from probes.runtime import offsets
from probes.runtime.attach import FunctionHooks
from probes.runtime.loader import load, unload
from probes.vhost_eventfd import VhostEventfdCount
from probes.vhost_queue import FIELDS as QUEUE_FIELDS
from probes.vhost_queue import Event, VhostQueueCorrelationDetails
from tests.netenv import our_bpf_programs
from tests.test_kprobe_programs_verify import CAPS, has_loop
from tests.test_ovs_output_doc import documented as _documented

DOC = Path(__file__).resolve().parent.parent / "docs" / "output-virt.md"
# Debian 6.1.0-57 (the lab): /sys/kernel/btf/{vhost,vhost_net,kvm}.
LAB_OFFSETS = {
    "VHOST_POLL_WAIT": 24, "VHOST_POLL_WORK": 64, "VHOST_POLL_MASK": 88, "VHOST_POLL_SIZE": 104, "VHOST_WORK_FN": 8,
    "VQ_POLL": 192, "VQ_PRIVATE_DATA": 17768, "VQ_NUM": 40, "VQ_LAST_AVAIL_IDX": 304, "VQ_AVAIL_IDX": 306,
    "VQ_LAST_USED_IDX": 308, "VQ_CALL_CTX": 104, "VNET_VQS": 200, "VNET_POLL": 38000, "VNET_NVQ_SIZE": 18900,
    "VNET_NVQ_VQ": 0, "VNET_NVQ_RXQ_HEAD": 18860, "VNET_NVQ_RXQ_TAIL": 18864, "IRQFD_WAIT": 8, "IRQFD_EVENTFD": 184,
}
VQ = 0xFFFF888012340000

pytestmark = [pytest.mark.bpf, pytest.mark.skipif(os.geteuid() != 0, reason="needs root")]


def documented(where: str) -> set[str]:
    return _documented(where, DOC)


@pytest.fixture
def lab_kernel(monkeypatch):
    """The lab kernel's module offsets, tun built in here (its own offsets are real)."""
    real = offsets.module_offset
    monkeypatch.setattr(offsets, "module_offset", lambda name: LAB_OFFSETS[name] if name in LAB_OFFSETS else real(name))
    monkeypatch.setattr(vhost_common, "symbol_address", lambda name: 0xFFFFFFFFC0001000 + 16 * len(name))
    monkeypatch.setattr(vhost_common, "function_symbol", lambda name: (name, None))
    programs = []
    yield programs
    for bpf in programs:
        unload(bpf)
    assert our_bpf_programs() == []


def verify(bpf, functions) -> None:
    from bcc import BPF

    for fn in functions:
        bpf.load_func(fn.encode(), BPF.KPROBE)  # raises if the verifier rejects it
        assert not has_loop(bpf.dump_func(fn.encode())), fn


def test_eventfd_count_program_and_records(lab_kernel, monkeypatch):
    monkeypatch.setattr("probes.vhost_eventfd.irqfd_available", lambda: True)
    monkeypatch.setattr("probes.vhost_eventfd.arg_index", lambda module, fn, param: 2)
    monkeypatch.setattr("probes.vhost_eventfd.attach_hooks", lambda bpf, hooks, mode: FunctionHooks(bpf, mode))
    probe = VhostEventfdCount(caps=CAPS)
    probe.bpf = probe.load()
    lab_kernel.append(probe.bpf)
    verify(probe.bpf, ["on_poll_wakeup", "on_tx_kick", "on_rx_net", "on_work_return", "on_work_queue", "on_vq_work_queue",
                       "on_signal_n", "on_signal_return", "on_eventfd_signal", "on_irqfd_wakeup"])
    vqs = probe.bpf[b"vqs"]
    vqs[ct.c_uint64(VQ)] = vqs.Leaf(kicks=10, net_wakeups=2, runs=12, busy_ns=5_000_000, signal_attempts=9,
                                    eventfd_signals=7, signals=6, weight_exhausted=1, cpus=0b10, worker_tid=4242,
                                    worker_tgid=4242, kicker_tgid=4000, queue=0, rx=0, has_tap=1,
                                    worker_comm=b"vhost-4000", device=b"vm1")
    (rec,) = probe.read()
    assert set(rec) == documented('"vhost_eventfd"')
    assert (rec["tid"], rec["qemu_pid"], rec["kicks"], rec["signals"], rec["signals_no_irqfd"], rec["suppressed"],
            rec["cpus"]) == (4242, 4000, 10, 6, 1, 2, [1])
    (vq,) = rec["vqs"]
    assert set(vq) == documented("Each vq:") and (vq["device"], vq["queue"], vq["vq"]) == ("vm1", 0, "tx")
    assert probe.read() == []  # nothing new: nothing reported


def test_queue_program_and_records(lab_kernel):
    probe = VhostQueueCorrelationDetails(caps=CAPS, interval="0.1", latency_threshold="1000")
    probe.bpf = bpf = load("vhost_queue.bpf.c", probe.c_defines(), QUEUE_FIELDS)
    lab_kernel.append(bpf)
    verify(bpf, ["on_poll_wakeup", "on_poll_queue", "on_tx_kick", "on_rx_kick", "on_rx_net", "on_get_vq_desc_return",
                 "on_exceeds_weight_return", "on_work_return"])
    probe.start_reading()
    vqs, hist = bpf[b"vqs"], bpf[b"wait_hist"]
    vqs[ct.c_uint64(VQ)] = vqs.Leaf(works=5, unseen=1, wait_ns=8_000_000, wait_max_ns=5_000_000, run_ns=400_000,
                                    run_max_ns=200_000, packets=30, guest_empty=2, slow=1, tun_pending_max=64,
                                    cpus=0b1, worker_tid=4242, worker_pid=4242, queue=0, rx=1, has_tap=1,
                                    worker_comm=b"vhost-4000", device=b"vm1")
    hist[hist.Key(vq=VQ, slot=12)] = ct.c_uint64(4)
    (rec,) = probe.summary_records(1.0)
    assert set(rec) == documented('"vhost_queue_summary"')
    assert (rec["works"], rec["wait_avg_us"], rec["max_latency_us"], rec["qemu_pid"], rec["tun_ring_pending_max_since_start"],
            rec["histogram"]["count"]) == (5, 2000.0, 5000.0, 4000, 64, 4)

    e = Event(ts=10**9, vq=VQ, wait_ns=300_000_000, run_ns=50_000, cpu=1, tid=4242, pid=4242, waker_tid=77,
              waker_pid=77, tun_pending=64, tun_size=64, batch_pending=3, queue=0, packets=12, avail_pending=100,
              guest_empty=0, trigger=2, rx=1, weight=0, has_tap=1, comm=b"vhost-4000", waker_comm=b"ksoftirqd/1",
              device=b"vm1")
    ev = probe.event_record(e)
    assert set(ev) == documented('"vhost_queue"')
    assert (ev["trigger"], ev["latency_us"], ev["qemu_pid"], ev["tun_ring_pending"]) == ("socket", 300000.0, 4000, 64)


def test_queue_summary_of_a_run_shorter_than_the_interval(lab_kernel):
    """A 4 s run of the Details (the autopilot's in the lab) with the default 5 s --interval:
    its end (finish(), as the wizard calls it) reports the part so far, read from the real map."""
    probe = VhostQueueCorrelationDetails(caps=CAPS, latency_threshold="1000")
    probe.bpf = bpf = load("vhost_queue.bpf.c", probe.c_defines(), QUEUE_FIELDS)
    lab_kernel.append(bpf)
    probe.start_reading()
    probe.take_events = lambda: []  # no perf buffer opened: only the interval records are read here
    vqs = bpf[b"vqs"]
    vqs[ct.c_uint64(VQ)] = vqs.Leaf(works=40, wait_ns=8_000_000, wait_max_ns=290_000_000, run_ns=80_000_000,
                                    cpus=0b10, worker_tid=4242, worker_pid=4242, queue=0, rx=1, has_tap=1,
                                    worker_comm=b"vhost-4000", device=b"vm1")
    probe._last_summary -= 4.0  # the run so far
    assert probe.read() == []  # 4 s of a 5 s interval: no summary yet
    probe.finish()
    (rec,) = probe.read()
    assert rec["type"] == "vhost_queue_summary" and rec["works"] == 40 and 1.9 <= rec["busy_pct"] <= 2.1
    assert probe.read() == []
