"""A probe whose hook goes away under the exporter is detected, exported and alerted on.

Real taps the test makes and removes: tun-ring-monitor follows tap A, which is deleted,
and tap B, which is deleted and created again under its name (a VM restarted: a new
ifindex the probe does not follow).  Both probes must show as detached with the reason,
close (their BPF programs unloaded), and fire NetsleuthProbeDown from the shipped rules in
a real Prometheus, while drop-summary keeps serving.  A module unloaded under a kprobe is
the lab's (tests/lab/test_lab_exporter.py)."""

from __future__ import annotations

import os
from pathlib import Path
import shutil
import uuid

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.netenv import TAP, open_tun, our_bpf_programs
from tests.promenv import Exporter, Prometheus, wait_until

pytestmark = [pytest.mark.bpf, pytest.mark.skipif(os.geteuid() != 0, reason="needs root to load BPF"),
              pytest.mark.skipif(shutil.which("prometheus") is None, reason="Debian's prometheus is not installed")]

RULES = "deploy/prometheus/netsleuth-alerts.yml"


def probe_states(text: str) -> dict[str, tuple[str, str]]:
    """probe -> (state, reason) from netsleuth_probe_info."""
    for fam in text_string_to_metric_families(text):
        if fam.name == "netsleuth_probe_info":
            return {s.labels["probe"]: (s.labels["state"], s.labels["reason"]) for s in fam.samples}
    return {}


def firing(prom: Prometheus) -> dict[str, dict]:
    return {a["metric"]["probe"]: a["metric"]
            for a in prom.query('ALERTS{alertname="NetsleuthProbeDown",alertstate="firing"}')}


def test_deleted_and_replaced_taps_detach_their_probes_and_alert():
    tag = uuid.uuid4().hex[:5]
    gone, replaced = f"elabg{tag}", f"elabr{tag}"
    with open_tun(TAP, name=gone) as (_, gone_fd), open_tun(TAP, name=replaced) as (_, replaced_fd):
        ids = {"gone": f"tun-ring-monitor:device={gone}", "replaced": f"tun-ring-monitor:device={replaced}"}
        exp = Exporter("--probes", ",".join(("drop-summary", *ids.values())))
        prom = None
        try:
            for probe in ("drop-summary", *ids.values()):
                exp.wait_probe(probe)
            held = set(our_bpf_programs(exp.proc.pid))
            prom = Prometheus([exp.address], rule_files=(RULES,))
            # The alert needs the probes seen up first (max_over_time(netsleuth_probe_up[1h]) == 1).
            wait_until("every probe seen up", lambda: prom.value("count(netsleuth_probe_up == 1)") == 3, 60)

            os.close(gone_fd)  # tap A deleted
            os.close(replaced_fd)  # tap B deleted, and made again under its name
            with open_tun(TAP, name=replaced):
                states = wait_until("both taps' probes detached",
                                    lambda: (s := probe_states(exp.metrics())) and
                                    s[ids["gone"]][0] == s[ids["replaced"]][0] == "detached" and s, 30)
                alerts = wait_until("NetsleuthProbeDown firing for both",
                                    lambda: len(a := firing(prom)) == 2 and a, 30)
                metrics = exp.metrics()
                after = set(our_bpf_programs(exp.proc.pid))
        finally:
            if prom is not None:
                prom.stop()
            exp.stop()
    assert states[ids["gone"]][1] == f"device {gone} (--device) was deleted"
    assert states[ids["replaced"]][1].startswith(f"device {replaced} (--device) was deleted and created again")
    assert states["drop-summary"] == ("up", "")
    assert f'netsleuth_probe_up{{probe="{ids["gone"]}"}} 0.0' in metrics.splitlines()
    assert 'netsleuth_probe_up{probe="drop-summary"} 1.0' in metrics.splitlines()
    for key in ("gone", "replaced"):
        alert = alerts[ids[key]]
        assert (alert["state"], alert["reason"]) == states[ids[key]], alert
    assert set(alerts) == set(ids.values())  # drop-summary serves on: no alert
    # The detached probes were closed: their programs unloaded (at least one each), drop-summary's kept.
    assert after < held and len(held - after) >= 2, (held, after)


def test_a_module_gone_or_reloaded_and_a_process_exited_are_told():
    """The other hooks Probe.gone() watches, on real /sys/module and /proc entries (the lab
    unloads a module under attached kprobes)."""
    import subprocess
    import sys

    from probes.runtime.following import Following, gone

    module = next(p.name for p in sorted(Path("/sys/module").iterdir()))
    inode = os.stat(f"/sys/module/{module}").st_ino
    assert gone(Following(modules={module: inode})) is None
    reloaded, unloaded = gone(Following(modules={module: inode + 1})), gone(Following(modules={"elab_nomod": 1}))
    assert reloaded.startswith(f"kernel module {module} was unloaded and loaded again"), reloaded
    assert unloaded.startswith("kernel module elab_nomod was unloaded:"), unloaded
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        from probes.runtime.following import snapshot

        f = snapshot(None, [], [p.pid])
        assert f.processes and gone(f) is None
    finally:
        p.kill()
        p.wait()
    assert gone(f) == f"process {p.pid} (--pid) exited"


def test_kprobe_events_map_to_their_modules(tmp_path):
    from probes.runtime.following import module_of_functions

    kallsyms = tmp_path / "kallsyms"
    kallsyms.write_text("ffffffffc0a00000 t ovs_dp_upcall\t[openvswitch]\n"
                        "ffffffffc0a00100 t queue_userspace_packet.constprop.0\t[openvswitch]\n"
                        "ffffffff81000000 T kfree_skb_reason\n")
    got = module_of_functions({b"ovs_dp_upcall", b"queue_userspace_packet_constprop_0", b"kfree_skb_reason"},
                              kallsyms)
    assert got == {b"ovs_dp_upcall": "openvswitch", b"queue_userspace_packet_constprop_0": "openvswitch"}
