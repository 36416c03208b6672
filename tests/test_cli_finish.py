"""The CLI's run loop ends a run the way the wizard's step loop does: finish() before the
last read, at --duration and on Ctrl-C, so a probe that reports its interval so far on
finish (vhost-queue-correlation-details, cpu-burst) prints it (issue 12)."""

from __future__ import annotations

import pytest

from probes import cli
from probes.base import DURATION, Probe, interval_flag


class OrderProbe(Probe):
    """Only the loop's side of a probe: it records the calls the loop makes."""

    name, title, tier, cost, description = "order", "order", 2, "none", "records the loop's calls"
    streaming = True
    flags = (interval_flag(60.0), DURATION)

    def __init__(self, interrupt_after: int | None = None, **raw):
        super().__init__(**raw)
        self.calls: list[str] = []
        self.interrupt_after = interrupt_after

    def wait(self, timeout: float) -> None:
        self.calls.append("wait")
        if self.interrupt_after is not None and self.calls.count("wait") > self.interrupt_after:
            raise KeyboardInterrupt

    def finish(self) -> None:
        self.calls.append("finish")

    def read(self) -> list[dict]:
        self.calls.append("read")
        return [{"type": "summary", "partial": "finish" in self.calls}]


def test_the_last_read_at_the_duration_follows_finish(capsys):
    probe = OrderProbe(duration="0.1")
    assert cli._loop(probe, as_json=True) == cli.EXIT_OK
    assert probe.calls[-2:] == ["finish", "read"] and probe.calls.count("finish") == 1
    assert capsys.readouterr().out.strip().splitlines()[-1] == '{"type": "summary", "partial": true}'


@pytest.mark.parametrize("waits", [1, 3])
def test_the_last_read_on_ctrl_c_follows_finish(capsys, waits):
    probe = OrderProbe(interrupt_after=waits)
    assert cli._loop(probe, as_json=True) == cli.EXIT_OK
    assert probe.calls[-2:] == ["finish", "read"] and probe.calls.count("finish") == 1
