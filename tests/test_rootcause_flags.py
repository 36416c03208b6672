"""Bad flags of the root-cause probes: exit 2 and one line naming the flag, never a traceback."""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.rootcause_support import run_cli


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


OTHER_PROCESS = str(os.getppid())  # a live process whose threads are not ours
DEAD = str(_dead_pid())
MY_TID = str(os.getpid())

CASES = [
    (["offcpu", "--min-block-us", "abc"], "--min-block-us"),
    (["offcpu", "--min-block-us", "0"], "--min-block-us"),
    (["offcpu", "--tid", "1,x"], "--tid"),
    (["offcpu", "--tid", DEAD], "--tid"),
    (["offcpu", "--tid", MY_TID, "--tid", "x"], "--tid"),  # repeated: every occurrence is checked
    (["offcpu", "-p", OTHER_PROCESS, "--tid", MY_TID], "--tid"),
    (["offcpu", "-p", DEAD], "--pid"),
    (["offcpu", "--attach", "kprobe"], "--attach"),
    (["offcpu", "--interval", "2"], "--interval"),
    (["futex", "-p", "abc"], "--pid"),
    (["futex", "--interval", "0"], "--interval"),
    (["futex", "-d", "-1"], "--duration"),
    (["pthread-lock"], "--pid"),
    (["pthread-lock", "-p", OTHER_PROCESS, "--min-wait-us", "-5"], "--min-wait-us"),
    (["cpu-burst"], "--pid"),
    (["cpu-burst", "-p", OTHER_PROCESS, "--threshold", "0"], "--threshold"),
    (["cpu-burst", "-p", OTHER_PROCESS, "--interval", "0.01"], "--interval"),
]


@pytest.mark.parametrize("args,flag", CASES, ids=[" ".join(a) for a, _ in CASES])
def test_bad_flag_exit_2_naming_it(args, flag):
    result = run_cli(*args)
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert flag in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert result.stdout == ""


def test_required_pid_message():
    result = run_cli("pthread-lock")
    assert "--pid is required" in result.stderr
