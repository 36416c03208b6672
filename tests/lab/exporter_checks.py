"""The exporter's histograms and detach detection on the real kprobe paths (runs INSIDE the
guest, from guest_checks; the host-side tests/lab/test_lab_exporter.py asserts).

`netsleuth exporter` runs here as a fleet host would run it, with ovs-upcall-summary and
system-latency-summary filtered to the host's UDP datagrams to the uplink namespace.  The
phase scrapes /metrics, sends datagrams each upcalled while ovs-vswitchd is stopped for a
known time (as latency_checks' udp_slow), and scrapes again: the host side computes
histogram_quantile over the two scrapes the way Prometheus does (tests/promenv.py; the
same function agrees with a real Prometheus in tests/test_exporter_histograms.py).  No
Prometheus runs in the guest: it is not in the lab image, and a quantile of two scrapes
needs none.  Last, the openvswitch module is unloaded under the exporter: its upcall probe
must show as detached, with the reason, and the other probe keep serving.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from probes.runtime.vmproc import comm
from tests.lab import topology as T
from tests.lab.latency_checks import LAT_UDP_PORT, Udp
from tests import netenv
from tests.netenv import ROOT
from tests.promenv import Exporter, http_get, wait_until

# Each datagram's upcall waits for ovs-vswitchd, stopped this long (ms): one per log2 bucket.
PAUSES_MS = (12, 25, 50, 100, 200, 400)
# The families the host side needs from each scrape (the rest is left out of the JSON).
FAMILIES = ("netsleuth_ovs_upcall_latency_seconds", "netsleuth_stage_latency_seconds", "netsleuth_probe_up",
            "netsleuth_probe_info")


def probes(sysnet: T.SystemPath) -> dict[str, str]:
    """name in the results -> the exporter's --probes entry (also its `probe` label)."""
    udp = f"src-ip={sysnet.ip}:dst-ip={sysnet.peer_ip}"
    return {"upcall": f"ovs-upcall-summary:proto=udp:{udp}",
            "stages": f"system-latency-summary:phy-interface={sysnet.uplink}:direction=tx:protocol=udp:{udp}"}


def _prometheus_client_path() -> str:
    """A directory holding only the host venv's prometheus_client (pure Python, the same
    Python 3.11 as the guest's): the lab image has no python3-prometheus-client, and
    adding it would rebuild the image for every engineer."""
    site = next(ROOT.glob(".venv/lib/python3*/site-packages/prometheus_client"), None)
    if site is None:
        raise RuntimeError("no prometheus_client in the working tree's .venv (run scripts/setup.sh --test)")
    d = Path(tempfile.mkdtemp(prefix="promlib-"))
    (d / "prometheus_client").symlink_to(site)
    return str(d)


def start_exporter(sysnet: T.SystemPath) -> Exporter:
    """Started right after the topology: its two probes compile while the other steps run."""
    env = {**os.environ, "PYTHONPATH": f"{os.environ.get('PYTHONPATH', str(ROOT))}:{_prometheus_client_path()}"}
    exp = Exporter("--probes", ",".join(probes(sysnet).values()), "--read-timeout", "30", env=env)
    exp.started, exp.probe_ids = time.monotonic(), list(probes(sysnet).values())
    return exp


def scrape(exp: Exporter) -> str:
    text = http_get(f"http://{exp.address}/metrics", timeout=60)
    keep = []
    for line in text.splitlines():
        name = line.split()[2] if line.startswith("# ") and len(line.split()) > 2 else line.split("{")[0].split()[0]
        if any(name.startswith(f) for f in FAMILIES):
            keep.append(line)
    return "\n".join(keep) + "\n"


def check_exporter(br: T.Bridge, sysnet: T.SystemPath, exp: Exporter) -> dict:
    ids = probes(sysnet)
    for probe in ids.values():
        exp.wait_probe(probe, timeout=600)
    out: dict = {"probes": ids, "attach_s": round(time.monotonic() - exp.started, 1), "pauses_ms": list(PAUSES_MS)}
    udp = Udp(sysnet)
    try:
        br.purge_flows()
        T.ping(sysnet.peer_ip, 1)
        time.sleep(0.5)
        out["before"] = scrape(exp)
        m0 = br.upcall_stats()["missed"]
        sent = []
        for i, pause_ms in enumerate(PAUSES_MS):
            br.purge_flows()
            with T.PausedVswitchd() as pause:
                pkts = udp.start("tx", 500 + i)
                time.sleep(pause_ms / 1000)
                resumed = pause.resume()
            for p in pkts:
                p.update(pause_ms=pause_ms, resumed_mono_ns=resumed)
            sent += udp.receive("tx", pkts)
        time.sleep(0.5)  # the last answers and stages
        out["missed"] = br.upcall_stats()["missed"] - m0
        out["after"] = scrape(exp)
        out["sent"] = sent
    finally:
        udp.close()
    return out


def check_module_unload(exp: Exporter) -> dict:
    """OVS stopped, its datapath deleted, openvswitch unloaded: both probes' kprobes in it go
    (the stage probe hooks OVS's functions too); the exporter must say so and serve on."""
    T.sh("ovs-appctl", "-t", "ovs-vswitchd", "exit", "--cleanup", check=False)
    T.sh("ovs-appctl", "-t", "ovsdb-server", "exit", check=False)
    wait_until("ovs-vswitchd gone", lambda: not any(comm(int(p.name)) == "ovs-vswitchd"
                                                    for p in Path("/proc").iterdir() if p.name.isdigit()), 30)
    for dp in T.sh("ovs-dpctl", "dump-dps", check=False).split():
        T.sh("ovs-dpctl", "del-dp", dp, check=False)
    rmmod = netenv.sh("rmmod", "openvswitch", check=False)
    out = {"rmmod": [rmmod.returncode, rmmod.stderr], "module_left": Path("/sys/module/openvswitch").exists()}
    out["scrape"] = wait_until("the OVS probes detached",
                               lambda: (t := scrape(exp)).count('state="detached"') == len(exp.probe_ids) and t, 30)
    out["exporter_running"] = exp.proc.poll() is None
    return out


def stop_exporter(exp: Exporter) -> dict:
    code = exp.stop()
    return {"returncode": code, "log": exp.output()[-4000:]}

