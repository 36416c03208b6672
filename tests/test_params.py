"""Flag validation: bad values give errors naming the flag; nothing but integers reaches C."""

from __future__ import annotations

import re
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from probes.drop_details import DropDetails
from probes.drop_hook import DropHook
from probes.drop_summary import DropSummary
from probes.runtime.params import CDefines, ParamError, ipv4, ipv4_text, port, protocol

CFLAG = re.compile(r"^-D[A-Z][A-Z0-9_]*=-?\d+U?LL$")
HOOK = DropHook("tracepoint", None, True)


def test_ipv4_is_packet_byte_order():
    value = ipv4("--src-ip", "10.1.2.3")
    assert struct.pack("<I", value) == bytes([10, 1, 2, 3])
    assert ipv4_text(value) == "10.1.2.3"


@pytest.mark.parametrize("bad", ["10.1.2", "256.1.1.1", "a.b.c.d", "10.0.0.1; rm -rf /", "0.0.0.0", "::1"])
def test_ipv4_rejects(bad):
    with pytest.raises(ParamError, match="--src-ip"):
        ipv4("--src-ip", bad)


@pytest.mark.parametrize("bad", ["0", "65536", "-1", "80a", "1e3"])
def test_port_rejects(bad):
    with pytest.raises(ParamError, match="--dst-port.*1-65535"):
        port("--dst-port", bad)


def test_protocol_names():
    assert protocol("--l4-protocol", "TCP") == 6
    assert protocol("--l4-protocol", "all") == 0
    with pytest.raises(ParamError, match="one of tcp, udp, icmp, all"):
        protocol("--l4-protocol", "sctp")


def test_unknown_flag_is_named():
    with pytest.raises(ParamError, match="--no-such"):
        DropSummary(no_such="1")


def test_cdefines_only_ints():
    d = CDefines()
    with pytest.raises(TypeError):
        d.set("NS_X", "1; evil()")
    with pytest.raises(ValueError):
        d.set("ns_lower", 1)
    d.set("NS_OK", 5).set("NS_NEG", -1)
    assert d.cflags() == ["-DNS_OK=5ULL", "-DNS_NEG=-1LL"]


text = st.one_of(st.text(max_size=30), st.from_regex(r"[0-9.]{1,16}", fullmatch=True),
                 st.integers(-70000, 70000).map(str), st.none())


@settings(max_examples=300, deadline=None)
@given(st.fixed_dictionaries({"src_ip": text, "dst_ip": text, "src_port": text, "dst_port": text,
                              "l4_protocol": text, "top": text, "group_by": text, "interval": text}))
def test_random_input_never_reaches_c_text(raw):
    try:
        probe = DropSummary(caps=_caps(), **raw)
    except ParamError as e:
        assert str(e).startswith("--")
        return
    for flag in probe.c_defines(HOOK).cflags():
        assert CFLAG.match(flag), flag


@settings(max_examples=200, deadline=None)
@given(st.fixed_dictionaries({"type": text, "vlan_id": text, "dst_ip": text, "src_port": text}))
def test_random_details_input_never_reaches_c_text(raw):
    try:
        probe = DropDetails(caps=_caps(), **raw)
    except ParamError:
        return
    for flag in probe.c_defines(HOOK).cflags():
        assert CFLAG.match(flag), flag


def _caps():
    from probes.runtime.kernel import KernelCaps

    return KernelCaps(release="test", btf=True, matching_headers=None, tracefs=None, kprobes=False,
                      raw_tracepoints=True, uprobes=True, drop_reasons={}, privileged=True)
