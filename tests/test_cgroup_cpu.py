"""Reading a process's CPU cgroup, quota and throttling from both hierarchies.  This host has
the v1 cpu controller (tests/test_rootcause_starvation.py reads it live); the lab guest is pure
cgroup v2, whose files are laid out here as the kernel writes them."""

from __future__ import annotations

from pathlib import Path

from probes.runtime.cgroup import cpu_cgroup, cpu_controller_mount, read_stat

V2_STAT = "usage_usec 9000\nuser_usec 8000\nsystem_usec 1000\nnr_periods 298\nnr_throttled 297\nthrottled_usec 26100000\n"
V1_STAT = "nr_periods 66\nnr_throttled 65\nthrottled_time 7425306991\nnr_bursts 0\nburst_time 0\n"


def layout(tmp: Path, mountinfo: str, cgroup: str, files: dict[str, str]) -> tuple[str, str]:
    (tmp / "proc" / "42").mkdir(parents=True)
    (tmp / "proc" / "42" / "cgroup").write_text(cgroup)
    (tmp / "mountinfo").write_text(mountinfo.replace("ROOT", str(tmp)))
    for rel, text in files.items():
        (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp / rel).write_text(text)
    return str(tmp / "proc"), str(tmp / "mountinfo")


def test_cgroup_v2_quota_on_an_ancestor(tmp_path):
    proc, mi = layout(tmp_path, "41 31 0:38 / ROOT/cg rw,relatime - cgroup2 cgroup2 rw,nsdelegate\n",
                      "0::/system.slice/openvswitch-switch.service\n", {
                          "cg/cgroup.controllers": "cpuset cpu io memory pids\n",
                          "cg/system.slice/cpu.max": "10000 100000\n",
                          "cg/system.slice/cpu.stat": V2_STAT,
                          "cg/system.slice/openvswitch-switch.service/cpu.max": "max 100000\n",
                          "cg/system.slice/openvswitch-switch.service/cpu.stat": "usage_usec 1\n"})
    cg = cpu_cgroup(42, proc, mi)
    assert (cg.version, cg.path, cg.limited, cg.quota_us, cg.period_us) == (
        2, "/system.slice/openvswitch-switch.service", "/system.slice", 10000, 100000)
    assert cg.quota_file == str(tmp_path / "cg/system.slice/cpu.max")
    assert cg.stat() == {"nr_periods": 298, "nr_throttled": 297, "throttled_us": 26_100_000}
    assert cpu_controller_mount(mi) == (2, str(tmp_path / "cg"))


def test_cgroup_v1_cpu_controller_wins_and_a_subtree_mount_is_cut(tmp_path):
    proc, mi = layout(tmp_path, (
        "32 31 0:29 /lxc ROOT/cpu rw,relatime - cgroup cgroup rw,cpu,cpuacct\n"
        "41 31 0:38 / ROOT/unified rw,relatime - cgroup2 cgroup2 rw\n"),
        "4:memory:/x\n2:cpu,cpuacct:/lxc/ovs\n0::/\n", {
            "cpu/ovs/cpu.cfs_quota_us": "20000\n", "cpu/ovs/cpu.cfs_period_us": "50000\n",
            "cpu/ovs/cpu.stat": V1_STAT, "unified/cpu.stat": "usage_usec 5\n"})
    cg = cpu_cgroup(42, proc, mi)
    assert (cg.version, cg.path, cg.limited, cg.quota_us, cg.period_us) == (1, "/lxc/ovs", "/lxc/ovs", 20000, 50000)
    assert cg.stat() == {"nr_periods": 66, "nr_throttled": 65, "throttled_us": 7_425_306}


def test_no_quota_and_no_process(tmp_path):
    proc, mi = layout(tmp_path, "32 31 0:29 / ROOT/cpu rw - cgroup cgroup rw,cpu\n", "1:cpu:/\n", {
        "cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n", "cpu/cpu.stat": V1_STAT})
    cg = cpu_cgroup(42, proc, mi)
    assert cg.limited is None and cg.quota_us is None and cg.quota_file is None
    assert cg.stat()["nr_periods"] == 66  # its own counters then
    assert cpu_cgroup(43, proc, mi) is None
    assert read_stat(str(tmp_path / "nowhere"), 2) == {"nr_periods": 0, "nr_throttled": 0, "throttled_us": 0}
