"""The real app in a real terminal: a tmux session driven with keys, its screen read back."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

from tests.netenv import ROOT


class Tmux:
    def __init__(self, command: str, env: dict[str, str], width: int = 100, height: int = 30):
        self.name = "nstest-" + uuid.uuid4().hex[:6]
        # A tmux server of its own (-L): nothing else runs in it, and it may be signalled (exit_status).
        self.tmux = ["tmux", "-L", self.name]
        args = [*self.tmux, "new-session", "-d", "-s", self.name, "-x", str(width), "-y", str(height), "-c", str(ROOT)]
        for k, v in env.items():
            args += ["-e", f"{k}={v}"]
        # os.environ, passed explicitly: under pytest, readline has putenv()'d COLUMNS=80/LINES=24 into
        # the process environment (not os.environ), which would pin the app to 80x24 whatever tmux says.
        subprocess.run(args + [command], check=True, env=dict(os.environ))
        # Keep the pane after the app exits: its exit status and last screen are checked.
        subprocess.run([*self.tmux, "set-option", "-t", self.name, "remain-on-exit", "on"], check=True)
        server = subprocess.run([*self.tmux, "display-message", "-p", "#{pid} #{socket_path}"], capture_output=True,
                                text=True, check=True).stdout.split(maxsplit=1)
        self.server_pid, self.socket = int(server[0]), Path(server[1].strip())

    def as_a_person_runs_it(self) -> None:
        """The terminal and the app at normal priority: a test run under `nice` would otherwise
        pass its niceness on to both, and timings would measure the scheduler, not the app
        (every thread of the app's main thread's, as the app starts its workers later)."""
        for pid in (self.server_pid, self.pid()):
            for task in os.listdir(f"/proc/{pid}/task"):
                os.setpriority(os.PRIO_PROCESS, int(task), 0)

    def screen(self) -> str:
        out = subprocess.run([*self.tmux, "capture-pane", "-p", "-t", self.name], capture_output=True, text=True)
        return out.stdout

    def keys(self, *keys: str) -> None:
        subprocess.run([*self.tmux, "send-keys", "-t", self.name, *keys], check=True)

    def exit_status(self) -> int | str | None:
        """The app's exit status once it has exited ("signal N" when a signal ended it), else None."""
        out = subprocess.run([*self.tmux, "list-panes", "-t", self.name, "-F",
                              "#{pane_dead}:#{pane_dead_status}:#{pane_dead_signal}"],
                             capture_output=True, text=True, check=True).stdout.strip()
        dead, status, sig = out.split(":")
        if dead != "1":
            return None
        if not (status or sig):
            # The pane died (its pty closed) but tmux has not reaped the app: closing the pty runs
            # libutempter, whose own SIGCHLD handler can swallow the app's exit (tmux/tmux#311);
            # tmux then reaps only at the next SIGCHLD (seen: 59 s, till the test killed it).
            os.kill(self.server_pid, signal.SIGCHLD)
            return None
        return int(status) if status else f"signal {sig}"

    def pid(self) -> int:
        out = subprocess.run([*self.tmux, "list-panes", "-t", self.name, "-F", "#{pane_pid}"], capture_output=True,
                             text=True, check=True)
        return int(out.stdout.split()[0])

    def wait_for(self, text: str, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            screen = self.screen()
            if text in screen:
                return screen
            time.sleep(0.2)
        raise AssertionError(f"{text!r} never showed; screen:\n{self.screen()}")

    def hangup(self) -> None:
        """Close the terminal: tmux sends the app SIGHUP."""
        subprocess.run([*self.tmux, "kill-session", "-t", self.name], capture_output=True)

    def kill(self) -> None:
        """Cleanup: close the terminal and never leave the app behind, even if it hangs."""
        try:
            pid = self.pid()
        except (subprocess.CalledProcessError, ValueError, IndexError):
            pid = None
        subprocess.run([*self.tmux, "kill-server"], capture_output=True)
        self.socket.unlink(missing_ok=True)  # a killed server leaves it behind
        deadline = time.monotonic() + 15
        while pid and os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
            time.sleep(0.2)
        if pid and os.path.exists(f"/proc/{pid}"):
            os.kill(pid, 9)


def loaded(prog_ids: list[int]) -> list[int]:
    """Those of the programs still loaded in the kernel (held by anyone)."""
    return [i for i in prog_ids
            if subprocess.run(["bpftool", "prog", "show", "id", str(i)], capture_output=True).returncode == 0]


def wait_gone(prog_ids: list[int], timeout: float = 10) -> list[int]:
    deadline = time.monotonic() + timeout
    while loaded(prog_ids) and time.monotonic() < deadline:
        time.sleep(0.2)
    return loaded(prog_ids)


def ended(pid: int) -> bool:
    """The process has exited (gone, or a zombie its parent, the tmux server, has yet to reap:
    a loaded tmux can take seconds to collect its exit status)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat[stat.rindex(")") + 2] == "Z"
