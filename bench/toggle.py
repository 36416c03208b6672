"""A probe that can be attached and detached without compiling again: a child process
the benches drive line by line (attach/detach toggles between interleaved rounds).

Every hook the probe placed is replayed: BCC's attach calls (recorded as the probe makes
them) and its BPF trampolines (probes/runtime/fentry.py: the link closed to detach, the
loaded program linked again to attach).  Names starting with "empty" are EmptyProgram's.

    python3 bench/toggle.py PROBE FLAGS_JSON     (the child; Toggle starts it)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from probes.runtime import fentry  # noqa: E402 - after the path above
from probes.runtime.attach import link_key  # noqa: E402

ATTACHES = {"attach_kprobe": "detach_kprobe", "attach_kretprobe": "detach_kretprobe",
            "attach_tracepoint": "detach_tracepoint", "attach_raw_tracepoint": "detach_raw_tracepoint"}


def _record_attaches(calls: list) -> dict:
    """Wrap bcc.BPF's attach methods so each call (the probe's own, BCC's autoload of its
    TRACEPOINT_PROBEs) is recorded; the originals, for replaying them."""
    import bcc

    originals = {name: getattr(bcc.BPF, name) for name in ATTACHES}

    def wrap(name, original):
        def attach(self, *args, **kwargs):
            if args or kwargs.get("event_re") or kwargs.get("tp_re"):
                raise RuntimeError(f"{name} with positional arguments or a pattern: cannot replay it")
            result = original(self, *args, **kwargs)
            calls.append((name, kwargs))
            return result
        return attach

    for name, original in originals.items():
        setattr(bcc.BPF, name, wrap(name, original))
    return originals


def empty_raw_tracepoint_program(tmp: Path):
    """A loaded BPF object whose program "empty" returns at once, for a raw tracepoint: what
    the tracepoint's hook alone costs."""
    return _empty(tmp, "int empty(struct bpf_raw_tracepoint_args *ctx) { return 0; }\n")


def empty_tracepoint_program(tmp: Path, category: str, event: str):
    """The same for a tracepoint, attached as BCC loads it (its program: tracepoint__CATEGORY__EVENT)."""
    return _empty(tmp, f"TRACEPOINT_PROBE({category}, {event}) {{ return 0; }}\n")


def _empty(tmp: Path, program: str):
    """Built like the probes (their include tree), so it loads where they do."""
    from probes.runtime.loader import load
    from probes.runtime.params import CDefines

    source = tmp / "empty.bpf.c"
    source.write_text("#include <uapi/linux/ptrace.h>\n" + program)
    return load(str(source), CDefines(), [])


class EmptyProgram:
    """A program that returns at once on each of ``functions``: what the hooks alone cost.
    ``attach``: kprobe, kretprobe or fentry (a BPF trampoline)."""

    streaming = False

    def __init__(self, functions: list[str], attach: str = "kprobe"):
        self.functions, self.attach, self.bpf, self.hooks = functions, attach, None, None

    def start(self) -> None:
        from bcc import BPF

        from probes.runtime.attach import FunctionHooks

        self.bpf = BPF(text="int empty(struct pt_regs *ctx) { return 0; }\n"
                            "int fentry_empty(unsigned long long *ctx) { return 0; }")
        if self.attach == "kretprobe":
            for f in self.functions:
                self.bpf.attach_kretprobe(event=f.encode(), fn_name=b"empty")
            return
        self.hooks = FunctionHooks(self.bpf, self.attach)
        for f in self.functions:
            self.hooks.entry(f, "empty")

    def describe_attach(self) -> str:
        by = self.hooks.by if self.hooks else {}
        return ", ".join(f"{by.get(f, self.attach)} {f}" for f in self.functions)

    def read(self) -> list[dict]:
        return []

    def close(self) -> None:
        if self.bpf is not None:
            self.bpf.cleanup()
            self.bpf = None


def hook_name(attach: str, kwargs: dict) -> str:
    kind = attach.removeprefix("attach_").replace("_", " ")
    target = kwargs.get("event") or kwargs.get("tp") or b"?"
    return f"{kind} {target.decode() if isinstance(target, bytes) else target}"


def toggle_child(name: str, flags: dict) -> int:
    """stdin: "off" / "on" (detach / attach every hook the probe placed) / "read" /
    "stats" (each program's run_cnt, run_time_ns) / "stop"; one JSON line answers each."""
    from bench.bpf_stats import fd_stats

    from probes.registry import PROBES as REGISTRY

    calls: list = []
    originals = _record_attaches(calls)
    probe = EmptyProgram(**flags) if name.startswith("empty") else REGISTRY[name](**flags)
    probe.start()
    bpf = probe.bpf
    lock = threading.Lock()
    records: list[dict] = []
    done = threading.Event()

    def poll() -> None:  # event probes: their buffer drained all along, as the CLI does
        while not done.is_set():
            with lock:
                probe.wait(0.1)
                records.extend(probe.read())
            time.sleep(0.05)

    hooks = getattr(probe, "hooks", None)
    trampolines = dict(hooks.trampolines) if hooks else {}  # hook ("fn" or "fn return") -> its program's key

    def detach() -> None:
        for key in trampolines.values():  # closing a trampoline's link detaches it; the program stays
            os.close(bpf.kfunc_entry_fds.pop(link_key(key)))
        for attach, kwargs in calls:
            target = {k: v for k, v in kwargs.items() if k in ("event", "fn_name", "tp")}
            if attach == "attach_tracepoint" or attach == "attach_raw_tracepoint":
                target.pop("fn_name", None)
            getattr(bpf, ATTACHES[attach])(**target)

    def attach() -> None:
        for attach_name, kwargs in calls:
            originals[attach_name](bpf, **kwargs)
        for hook, key in trampolines.items():
            bpf.kfunc_entry_fds[link_key(key)] = fentry.attach(bpf.funcs[key].fd, hook.removesuffix(" return"))

    poller = threading.Thread(target=poll, daemon=True) if probe.streaming else None
    if poller:
        poller.start()
    programs: dict[str, list[str]] = {}  # program -> the hooks it runs on
    for attach_name, kwargs in calls:
        fn = kwargs.get("fn_name") or b""
        programs.setdefault(fn.decode() if isinstance(fn, bytes) else fn, []).append(hook_name(attach_name, kwargs))
    for hook, key in trampolines.items():  # "fentry f" or "fexit f"
        programs.setdefault(key.decode(), []).append(f"{hooks.by[hook]} {hook.removesuffix(' return')}")
    print(json.dumps({"attached": probe.describe_attach(), "hooks": len(calls) + len(trampolines),
                      "programs": programs}), flush=True)
    try:
        for line in sys.stdin:
            cmd = line.strip()
            t0 = time.monotonic()
            with lock:
                if cmd == "off":
                    detach()
                elif cmd == "on":
                    attach()
                elif cmd == "read":
                    got = records[:] if poller else probe.read()
                    records.clear()
                    print(json.dumps(got), flush=True)
                    continue
                elif cmd == "stats":
                    print(json.dumps({fn.decode(): fd_stats(f.fd) for fn, f in bpf.funcs.items()}), flush=True)
                    continue
                elif cmd == "stop":
                    break
            print(json.dumps({"ok": cmd, "s": round(time.monotonic() - t0, 3)}), flush=True)
    finally:
        done.set()
        probe.close()
    return 0


class Toggle:
    """The parent's handle on a toggle_child."""

    def __init__(self, name: str, flags: dict):
        self.name = name
        self.proc = subprocess.Popen([sys.executable, __file__, name, json.dumps(flags)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True)
        self.started = time.monotonic()
        self.ready_s: float | None = None
        self.attached = ""
        self.toggle_s: list[float] = []

    def _line(self) -> str:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"{self.name} ended: {self.proc.stderr.read()[-3000:]}")
        return line

    def ready(self) -> "Toggle":
        first = json.loads(self._line())
        self.ready_s = round(time.monotonic() - self.started, 1)
        self.attached = first["attached"]
        self.programs = first["programs"]
        self.command("off")
        return self

    def command(self, cmd: str):
        self.proc.stdin.write(cmd + "\n")
        self.proc.stdin.flush()
        answer = json.loads(self._line())
        if cmd in ("on", "off"):
            self.toggle_s.append(answer["s"])
        return answer

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.write("stop\n")
            self.proc.stdin.flush()
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# --- guest side ------------------------------------------------------------------


if __name__ == "__main__":
    sys.exit(toggle_child(sys.argv[1], json.loads(sys.argv[2])))
