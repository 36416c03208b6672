"""Shared pieces of the root-cause probe tests: the known-behaviour target program
(tests/rootcause_target.c, compiled here at test time), the check that no BPF
program of ours stays loaded, and the check of records against their documentation."""

from __future__ import annotations

import functools
import json
import os
import re
import select
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.netenv import NETSLEUTH, ROOT, our_bpf_programs

SOURCE = Path(__file__).with_name("rootcause_target.c")


def _build(tmp_path_factory, name: str, *cflags: str) -> Path:
    out = tmp_path_factory.mktemp("rootcause") / name
    subprocess.run(["gcc", *cflags, "-pthread", "-o", str(out), str(SOURCE)], check=True, capture_output=True,
                   text=True)
    return out


@pytest.fixture(scope="session")
def target_binary(tmp_path_factory) -> Path:
    # Frame pointers in our own code: its frames must show in the user stacks.
    return _build(tmp_path_factory, "rootcause_target", "-O1", "-g", "-fno-omit-frame-pointer")


@pytest.fixture(scope="session")
def target_binary_without_frame_pointers(tmp_path_factory) -> Path:
    """The same program built like most distribution code: frame-pointer unwinding fails."""
    return _build(tmp_path_factory, "rootcause_target_nofp", "-O2", "-fomit-frame-pointer")


class Target:
    """One run of the target program (see the protocol in rootcause_target.c)."""

    def __init__(self, binary: Path, *args: str, autogroup_nice: int | None = None):
        # autogroup_nice: in a session of its own whose autogroup has this nice (see busy_loop).
        self.proc = subprocess.Popen([str(binary), *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, start_new_session=autogroup_nice is not None)
        if autogroup_nice is not None:
            set_autogroup_nice(self.proc.pid, autogroup_nice)
        hello = self._line(10)
        self.pid: int = hello["pid"]
        self.tids: dict[str, int] = hello["tids"]
        self.started = False

    def has_output(self, timeout: float = 0) -> bool:
        """Whether the next line is there (the work is done), without blocking past ``timeout``."""
        return bool(select.select([self.proc.stdout], [], [], timeout)[0])

    def _line(self, timeout: float) -> dict:
        if not self.has_output(timeout):
            raise TimeoutError(f"target {self.proc.args} printed nothing within {timeout} s")
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"target {self.proc.args} exited with {self.proc.wait()}")
        return json.loads(line)

    def start(self) -> None:
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()
        self.started = True

    def truth(self, timeout: float = 30) -> dict:
        """Wait until the work is done; what the program measured itself."""
        return self._line(timeout)

    def finish(self) -> None:
        if self.proc.poll() is None:
            # A target never started reads its start line first.
            self.proc.stdin.write("exit\n" if self.started else "go\nexit\n")
            self.proc.stdin.flush()
            self.proc.wait(10)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        try:
            self.finish()
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        return False


def loaded_program_ids() -> set[int]:
    out = subprocess.run(["bpftool", "-j", "prog", "show"], capture_output=True, text=True, check=True).stdout
    return {p["id"] for p in json.loads(out or "[]")}


class BpfWatch:
    """Remembers the BPF programs a probe loaded (in this process or a CLI child),
    so the test can check afterwards that none of them is still loaded."""

    def __init__(self) -> None:
        self.before = set(our_bpf_programs())
        self.seen: set[int] = set()

    def snapshot(self, pid: int | None = None) -> set[int]:
        ids = set(our_bpf_programs(pid)) - (self.before if pid is None else set())
        self.seen |= ids
        return ids

    def assert_released(self) -> None:
        assert self.seen, "the test never saw the probe's BPF programs: call snapshot() while it runs"
        assert set(our_bpf_programs()) <= self.before, "this process still holds BPF programs"
        # Program ids are not reused soon, so a seen id still listed means it was not freed.
        deadline = time.monotonic() + 5
        while self.seen & loaded_program_ids():
            assert time.monotonic() < deadline, f"BPF programs {sorted(self.seen & loaded_program_ids())} " \
                                                "are still loaded"
            time.sleep(0.1)


@pytest.fixture
def bpf_watch():
    watch = BpfWatch()
    yield watch
    watch.assert_released()


def run_for(probe, seconds: float) -> None:
    """Let a started probe poll/sample for ``seconds``."""
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        probe.wait(min(left, 0.2))


def run_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """`netsleuth probe ARGS` to completion."""
    return subprocess.run(NETSLEUTH + ["probe", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)


requires_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to load BPF")


class QuotaCgroup:
    """A CPU cgroup of our own with a quota (cgroup v1 ``cpu`` controller, or v2 ``cpu.max``),
    removed on exit (its processes must be gone by then)."""

    def __init__(self, quota_us: int, period_us: int):
        from probes.runtime.cgroup import cpu_controller_mount

        found = cpu_controller_mount()
        if found is None:
            pytest.skip("no cgroup hierarchy offers the cpu controller here")
        self.version, mount = found
        self.path = "/nsltest-" + os.urandom(3).hex()
        self.dir = Path(mount) / self.path.lstrip("/")
        self.quota_us, self.period_us = quota_us, period_us

    def __enter__(self):
        if self.version == 2:
            (self.dir.parent / "cgroup.subtree_control").write_text("+cpu")
        self.dir.mkdir()
        if self.version == 1:
            (self.dir / "cpu.cfs_period_us").write_text(str(self.period_us))
            (self.dir / "cpu.cfs_quota_us").write_text(str(self.quota_us))
        else:
            (self.dir / "cpu.max").write_text(f"{self.quota_us} {self.period_us}")
        return self

    def add(self, pid: int) -> None:
        (self.dir / "cgroup.procs").write_text(str(pid))

    def stat(self) -> dict[str, int]:
        from probes.runtime.cgroup import read_stat

        return read_stat(str(self.dir), self.version)

    def __exit__(self, *exc):
        deadline = time.monotonic() + 10
        while True:
            try:
                self.dir.rmdir()
                return False
            except OSError:  # its processes are still exiting
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)


def busy_loop(name: str, tmp: Path, cpu: int | None = None, nice: int = 0) -> subprocess.Popen:
    """A shell spinning forever under the process name ``name`` (a copy of /bin/sh), on
    CPU ``cpu`` when given, at ``nice``."""
    shell = tmp / name
    if not shell.exists():
        shutil.copy("/bin/sh", shell)
    cmd = ["nice", "-n", str(nice)] + (["taskset", "-c", str(cpu)] if cpu is not None else [])
    # In a session of its own: with autogroup scheduling, nice only ranks tasks of one session,
    # and the session's autogroup takes the same nice against the other sessions.
    proc = subprocess.Popen(cmd + [str(shell), "-c", "while :; do :; done"], start_new_session=True)
    if nice:
        set_autogroup_nice(proc.pid, nice)
    return proc


def set_autogroup_nice(pid: int, nice: int) -> None:
    """The nice of the autogroup (session) of ``pid``, where the kernel schedules by autogroup."""
    autogroup = Path(f"/proc/{pid}/autogroup")
    if autogroup.exists():
        autogroup.write_text(str(nice))


# --- records against docs/output-root-cause.md ------------------------------------------

OUTPUT_DOC = ROOT / "docs" / "output-root-cause.md"


@functools.lru_cache(maxsize=1)
def documented_fields() -> dict[str, frozenset[str]]:
    """Record type (or ``type.list[]`` for the rows of a list field) -> the fields its table lists."""
    tables: dict[str, set[str]] = {}
    current: set[str] | None = None
    for line in OUTPUT_DOC.read_text().splitlines():
        heading = re.match(r"^### `([\w.\[\]]+)`", line)
        if heading:
            current = tables.setdefault(heading.group(1), set())
        elif line.startswith("#"):
            current = None
        elif current is not None and (row := re.match(r"^\| `(\w+)` \|", line)):
            current.add(row.group(1))
    return {name: frozenset(fields) for name, fields in tables.items()}


def assert_documented(record: dict) -> None:
    """The record has exactly the fields its type's table documents, and so have the rows of
    its documented list fields."""
    tables = documented_fields()
    rtype = record["type"]
    assert rtype in tables, f"record type {rtype!r} is not documented in {OUTPUT_DOC.name}"
    assert set(record) == tables[rtype], (f"{rtype}: undocumented {sorted(set(record) - tables[rtype])}, "
                                          f"documented but missing {sorted(tables[rtype] - set(record))}")
    for name, fields in tables.items():
        if name.startswith(rtype + ".") and name.endswith("[]"):
            for row in record[name[len(rtype) + 1:-2]]:
                assert set(row) == fields, (f"{name}: undocumented {sorted(set(row) - fields)}, "
                                            f"documented but missing {sorted(fields - set(row))}")
