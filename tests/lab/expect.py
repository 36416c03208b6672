"""Reading the guest's results.json in the host-side lab tests."""

from __future__ import annotations


def step_ok(lab: dict, name: str) -> None:
    """The guest-side step ran without an exception (else show its traceback)."""
    assert name in lab["steps"], f"step {name} never ran\n{lab['host']['explain']}"
    assert name not in lab["errors"], f"guest step {name} failed:\n{lab['errors'][name]}"


def scenario_flow(scenario: dict) -> dict:
    """The flow record a probe should report for a scenario's UDP packets."""
    return {"protocol": "udp", "src_ip": scenario["src_ip"], "dst_ip": scenario["dst_ip"],
            "src_port": scenario["sport"], "dst_port": scenario["dport"]}


def summary_entries(lab: dict, scenario: dict) -> list[dict]:
    """drop-summary entries (over all its reports) for the scenario's flow."""
    flow = scenario_flow(scenario)
    return [e for r in lab["probes"]["drop-summary"]["records"] for e in r["entries"] if e["flow"] == flow]


def detail_events(lab: dict, scenario: dict) -> list[dict]:
    """drop-details events for the scenario's flow."""
    flow = scenario_flow(scenario)
    return [r for r in lab["probes"]["drop-details"]["records"] if r.get("type") == "drop" and r["flow"] == flow]


def run_checks(checks, result: dict, label: str = "") -> int:
    """A dev-loop result checked outside pytest: a line per check; how many failed."""
    failed = 0
    for check in checks:
        try:
            check(result)
            print("ok  ", label, check.__name__)
        except (AssertionError, KeyError) as e:
            failed += 1
            print("FAIL", label, check.__name__, repr(e)[:1500])
    return failed
