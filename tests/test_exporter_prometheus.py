"""`netsleuth exporter` against a real Prometheus, with real drops in namespaces we create.

Ground truth: the kernel's own UDP NoPorts counter in the receiving namespace, and
the number of datagrams we sent to its closed port.  The datagrams are sent inside the
namespace, to its own address (through its loopback): the namespace's inode is a label
no other test's traffic can reach (the 10.253.x subnets of concurrent runs can overlap).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time

import pytest

from tests.netenv import our_bpf_programs, send_udp, sh, still_loaded, veth_ns
from tests.promenv import Exporter, Prometheus, http_get, wait_until

pytestmark = [pytest.mark.bpf, pytest.mark.skipif(os.geteuid() != 0, reason="needs root to load BPF"),
              pytest.mark.skipif(shutil.which("prometheus") is None, reason="Debian's prometheus is not installed")]

CLOSED_PORT = 9999
# Not runnable here (no kprobes): they must show as down, with the reason, beside drop-summary.
KPROBE_PROBES = ("ovs-upcall-summary", "system-latency-summary:phy-interface=lo:direction=rx")


def udp_no_ports(ns: str) -> int:
    """The namespace's Udp NoPorts counter (/proc/net/snmp): datagrams to a closed port."""
    lines = [line.split() for line in sh("cat", "/proc/net/snmp", ns=ns).stdout.splitlines() if line.startswith("Udp:")]
    header, values = lines[0], lines[1]
    return int(values[header.index("NoPorts")])


@pytest.fixture
def env():
    with veth_ns() as e:
        yield e


@pytest.fixture
def exporter():
    exp = Exporter("--probes", ",".join(("drop-summary",) + KPROBE_PROBES))
    try:
        exp.wait_probe("drop-summary")
        yield exp
    finally:
        exp.stop()


def test_prometheus_counts_closed_port_drops_exactly(env, exporter):
    prom = Prometheus([exporter.address])
    try:
        wait_until("the target up", lambda: prom.value('up{job="netsleuth"}') == 1, 60)
        netns = os.stat(f"/run/netns/{env.ns}").st_ino
        series = f'netsleuth_drops_total{{reason="NO_SOCKET",location="__udp4_lib_rcv",device="lo",netns="{netns}"}}'
        # One datagram first, so the series exists before the ones we count.
        send_udp(env.peer_ip, CLOSED_PORT, 1, ns=env.ns)
        wait_until("the first drop scraped", lambda: prom.value(series) == 1, 60)
        t0, kernel0 = time.time(), udp_no_ports(env.ns)
        sent = 137
        send_udp(env.peer_ip, CLOSED_PORT, sent, ns=env.ns)
        wait_until("the drops scraped", lambda: prom.value(series) == 1 + sent, 60)
        time.sleep(2.5)  # a few more scrapes: nothing more may come
        t1, kernel1 = time.time(), udp_no_ports(env.ns)
        assert kernel1 - kernel0 == sent
        # The increase between the two instants, as Prometheus stored it.
        assert prom.value(series, at=t1) - prom.value(series, at=t0) == sent
        assert prom.value(f"{series} - {series} offset {round((t1 - t0) * 1000)}ms", at=t1) == sent

        # The probes this host cannot run are down, with why; drop-summary kept serving.
        down = prom.query("netsleuth_probe_up == 0")
        assert {r["metric"]["probe"] for r in down} == set(KPROBE_PROBES)
        info = prom.query('netsleuth_probe_info{state="down"}')
        assert all(r["metric"]["reason"].startswith("needs kprobes") for r in info), info
        assert prom.value('netsleuth_probe_up{probe="drop-summary"}') == 1
        assert prom.value('netsleuth_map_max_entries{probe="drop-summary",map="drops"}') == 10240
        assert prom.value("netsleuth_build_info") == 1
    finally:
        prom.stop()


def test_promtool_check_metrics_passes_on_a_real_scrape(env, exporter):
    netns = os.stat(f"/run/netns/{env.ns}").st_ino
    send_udp(env.peer_ip, CLOSED_PORT, 5, ns=env.ns)
    wait_until("the drops in a scrape", lambda: f'netns="{netns}"' in exporter.metrics(), 30)
    text = exporter.metrics()
    check = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True)
    assert check.returncode == 0 and check.stdout == check.stderr == "", check
    # The status page: which probes run, and why the others do not.
    page = http_get(f"http://{exporter.address}/")
    assert "drop-summary</td><td>up</td>" in page
    assert "ovs-upcall-summary</td><td>down</td><td>needs kprobes" in page


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP], ids=lambda s: s.name)
def test_a_stop_signal_leaves_no_bpf_program(sig):
    exp = Exporter("--probes", "drop-summary")
    try:
        exp.wait_probe("drop-summary")
        held = set(our_bpf_programs(exp.proc.pid))
        assert held, "the exporter holds no BPF program while drop-summary is up"
        began = time.monotonic()
        assert exp.stop(sig) == 0, exp.output()
        assert time.monotonic() - began < 20
    finally:
        exp.stop(signal.SIGKILL)
    left = still_loaded(held)
    assert not left, f"still loaded after {sig.name}: {sorted(left)}"


def test_a_probe_failing_to_load_is_down_with_the_reason_and_the_exporter_serves():
    """drop-summary asked to attach by kprobe, which this kernel lacks: its load fails in its
    thread (after the availability check passed), and the exporter goes on serving."""
    exp = Exporter("--probes", "drop-summary:attach=kprobe")
    try:
        line = 'netsleuth_probe_up{probe="drop-summary:attach=kprobe"} 0.0'
        wait_until("the probe down", lambda: 'state="down"' in exp.metrics_once_serving(), 120)
        text = exp.metrics()
        assert line in text.splitlines()
        (info,) = [x for x in text.splitlines() if x.startswith("netsleuth_probe_info{")]
        assert 'reason="drop-summary: kprobes are not available' in info, info
        assert exp.proc.poll() is None
        assert our_bpf_programs(exp.proc.pid) == []
    finally:
        assert exp.stop() == 0
