"""The shipped alert rules: valid, unit-tested with promtool, and every command they
print is one `netsleuth diagnose` accepts (its symptom and flags)."""

from __future__ import annotations

import shlex
import shutil
import subprocess

import pytest
import yaml

from playbooks import load_library
from probes.registry import PROBES
from tests.netenv import ROOT
from wizard.main import build_parser

RULES = ROOT / "deploy/prometheus"
pytestmark = pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (Debian's prometheus) missing")


def _promtool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["promtool", *args], cwd=RULES, capture_output=True, text=True, timeout=120)


def test_rules_are_valid_and_their_unit_tests_pass():
    check = _promtool("check", "rules", "netsleuth-alerts.yml")
    assert check.returncode == 0, check.stdout + check.stderr
    run = _promtool("test", "rules", "netsleuth-alerts.test.yml")
    assert run.returncode == 0 and "SUCCESS" in run.stdout, run.stdout + run.stderr


def _rendered_commands() -> list[str]:
    tests = yaml.safe_load((RULES / "netsleuth-alerts.test.yml").read_text())["tests"]
    return [a["exp_annotations"]["netsleuth_command"] for t in tests for case in t["alert_rule_test"]
            for a in case.get("exp_alerts", []) if "netsleuth_command" in a["exp_annotations"]]


def test_every_alert_with_a_command_is_covered_and_the_commands_parse():
    rules = yaml.safe_load((RULES / "netsleuth-alerts.yml").read_text())["groups"][0]["rules"]
    with_command = {r["alert"] for r in rules if "netsleuth_command" in r["annotations"]}
    tests = yaml.safe_load((RULES / "netsleuth-alerts.test.yml").read_text())["tests"]
    tested = {case["alertname"] for t in tests for case in t["alert_rule_test"] if case.get("exp_alerts")}
    assert with_command <= tested
    symptoms = set(load_library(probes=PROBES).playbooks)
    parser = build_parser()
    commands = _rendered_commands()
    assert len(commands) >= 4
    for command in commands:
        argv = shlex.split(command)
        assert argv[:2] == ["netsleuth", "diagnose"], command
        args = parser.parse_args(argv[1:])  # an unknown flag exits (SystemExit) here
        assert args.symptom in symptoms and args.autopilot and args.report, command
