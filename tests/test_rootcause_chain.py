"""The guide's case told with a CPU quota as the root (the lab scenario's shape, as records):
reported loss → latency → late upcalls → the quota; the conclusion's chain goes root first,
and lock waits whose holder waited for a CPU are no cause."""

from __future__ import annotations

from tests.test_playbooks_engine import (CASE_CONTEXT, guide_case_records, merged, run_suggested, upcall_record,
                                         walk_to_summary)


def starvation_record(**over):
    rec = {"type": "cpu_starvation", "time": "2026-01-01T00:00:10+00:00", "interval_s": 1.0, "pid": 4200,
           "comm": "ovs-vswitchd", "cgroup_version": 2, "cgroup": "/system.slice/openvswitch-switch.service",
           "quota_cgroup": "/system.slice/openvswitch-switch.service",
           "quota_file": "/sys/fs/cgroup/system.slice/openvswitch-switch.service/cpu.max",
           "quota_us": 10000, "period_us": 100000, "quota_cpus": 0.1, "nr_periods": 298, "nr_throttled": 297,
           "throttled_us": 26_100_000, "throttled_pct": 99.7, "interval_nr_periods": 10,
           "interval_nr_throttled": 10, "interval_throttled_us": 880_000, "waits": 5000, "max_wait_us": 290_000,
           "threads": [{"tid": 4242, "comm": "handler23", "count": 3000, "total_us": 9_000_000, "max_us": 290_000,
                        "p50_us": 1023, "p99_us": 262_143, "buckets": []}],
           "ran_instead": [{"pid": 0, "comm": "swapper/1", "idle": True, "wait_us": 8_000_000, "count": 900}],
           "uncounted_table_full": 0}
    rec.update(over)
    return rec


def starved_holder_waits():
    return [{"type": "lock_wait", "time": f"2026-01-01T00:00:0{i}+00:00", "lock": "0x55d0c0ffee", "kind": "rdlock",
             "pid": 4200, "waiter_tid": 4242 + i % 2, "waiter_comm": f"handler{23 + i % 2}", "wait_us": 400_000,
             "holder_tid": 4300, "holder_comm": "revalidator12", "holder_kind": "wrlock", "holder_hold_us": 420_000,
             "holder_on_cpu_us": 9_000, "holder_runq_us": 380_000} for i in range(4)]


def test_quota_is_the_root_of_the_late_upcalls_and_the_lock_waits_its_symptom():
    w = walk_to_summary(CASE_CONTEXT)
    w.complete("ok", merged("drop-summary", guide_case_records(), 1800), 1800)
    w.choose("ovs-slow/ovs-upcall-summary")
    w.complete("ok", merged("ovs-upcall-summary", [upcall_record()]), 30)
    # CPU first: the upcall tail proposes the starvation step before the lock steps.
    assert [s.ref for s in w.suggestions() if s.ref.startswith("ovs-slow/")][0] == "ovs-slow/cpu-starvation"
    w.choose("ovs-slow/pthread-lock")
    w.complete("ok", merged("pthread-lock", starved_holder_waits()), 10)
    rules = {f.rule for f in w.findings}
    assert "lock-holder-starved" in rules and not rules & {"revalidator-holds-lock", "lock-held-long"}
    run_suggested(w, "ovs-slow/cpu-starvation", merged("cpu-starvation", [starvation_record()], 10))
    c = w.conclusion()
    assert c.cause_found and c.causes[0].rule == "cpu-quota-throttled"
    assert ("; the other 203 are latency: The CPU quota throttles ovs-vswitchd: 297 of 298 periods throttled, "
            "threads waited up to 290.0 ms runnable.") in c.summary
    assert c.fixes[0].startswith("Raise or remove the quota: "
                                 "`/sys/fs/cgroup/system.slice/openvswitch-switch.service/cpu.max`")
    assert c.chain == [
        "the CPU quota of /system.slice/openvswitch-switch.service (10.0 ms per 100.0 ms) throttled ovs-vswitchd "
        "in 297 of 298 periods",
        "handler23 (4242) waits up to 290.0 ms for a CPU once it can run",
        "upcalls wait up to 287.0 ms for ovs-vswitchd (median 127 µs)",
        "(not measured: time packets spend in OVS (latency Summary / Details))",
        "203 of the 234 packets reported lost were late, not lost",
    ]


def test_contention_names_the_task_and_a_quiet_process_points_at_off_cpu_time():
    w = walk_to_summary(CASE_CONTEXT)
    w.choose("ovs-slow/cpu-starvation")
    busy = starvation_record(quota_us=None, period_us=None, quota_cgroup=None, quota_file=None, quota_cpus=None,
                             nr_throttled=0, nr_periods=0, throttled_pct=None, max_wait_us=40_000,
                             ran_instead=[{"pid": 777, "comm": "qemu-kvm", "idle": False, "wait_us": 3_000_000,
                                           "count": 400}])
    w.complete("ok", merged("cpu-starvation", [busy], 10), 10)
    cause = next(f for f in w.findings if f.explains)
    assert cause.rule == "cpu-contention" and "qemu-kvm (pid 777) ran" in cause.title
    w.back()
    w.choose("ovs-slow/cpu-starvation")
    quiet = starvation_record(max_wait_us=900, nr_throttled=0, throttled_pct=0.0)
    quiet["threads"][0]["max_us"] = 900
    w.complete("ok", merged("cpu-starvation", [quiet], 10), 10)
    assert [f.rule for f in w.findings if f.step == "ovs-slow/cpu-starvation"] == ["cpu-not-starved"]
    assert [s.ref for s in w.suggestions()] == ["ovs-slow/offcpu"]


def test_a_holder_not_seen_is_no_cause_and_says_which_run_names_it():
    w = walk_to_summary(CASE_CONTEXT)
    w.choose("ovs-slow/pthread-lock")
    unseen = [{**wait, "holder_tid": None, "holder_comm": None, "holder_kind": None, "holder_hold_us": None,
               "holder_on_cpu_us": None, "holder_runq_us": None} for wait in starved_holder_waits()]
    w.complete("ok", merged("pthread-lock", unseen), 10)
    [f] = [f for f in w.findings if f.group == "lock-holders"]
    assert f.rule == "lock-holder-unknown" and not f.explains
    assert f.title == "Threads wait up to 400.0 ms for lock 0x55d0c0ffee, held by ? (not seen)"
    assert "netsleuth probe pthread-lock -p 4200 --duration 60" in f.advice[0]
    assert [s.ref for s in w.suggestions()][0] == "ovs-slow/cpu-starvation"
