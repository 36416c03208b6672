"""Every probe flag has a label for the forms, and a thing has one name on every screen."""

from __future__ import annotations

import re

from playbooks import load_library
from probes.registry import PROBES


def test_every_probe_flag_has_a_label():
    unlabelled = [f"{name} --{f.name}" for name, cls in PROBES.items() for f in cls.flags if not f.label]
    assert unlabelled == []


def test_a_flag_and_the_context_field_it_is_filled_from_share_their_label():
    """A step's param `dst-port: "{context.dst_port}"` is the same fact as the context's
    `dst_port`: the step form and the context form call it the same (two declarations, one in
    each layer: probes know nothing of the playbooks; this keeps them equal)."""
    lib = load_library(probes=PROBES)
    differ, compared = [], 0
    for step in lib.steps.values():
        flags = {f.name: f for f in getattr(PROBES.get(step.probe), "flags", ())}
        for param in step.params:
            m = re.search(r"context\.(\w+)\}$", str(param.template.source))
            # the same thing: a field and the flag of its name, or the interface filter of the
            # context's interface (a generic flag filled from a specific field, "Process (PID)" from
            # "ovs-vswitchd PID", names the more specific thing on purpose)
            same = m and (m.group(1) == param.flag.replace("-", "_") or
                          (m.group(1) == "device" and param.flag in ("device", "interface")))
            if same and param.flag in flags and m.group(1) in lib.context:
                compared += 1
                label = lib.context[m.group(1)].label
                if flags[param.flag].title != label:
                    differ.append((step.ref, param.flag, flags[param.flag].title, label))
    assert compared > 10 and differ == [], differ
