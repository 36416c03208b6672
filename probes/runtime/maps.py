"""How full a loaded program's keyed maps are: entries against max_entries.

Arrays are always "full" and say nothing; hash, LRU and stack-trace maps fill up
as keys come, and a full one loses or evicts keys (what the exporter reports).
"""

from __future__ import annotations

import ctypes as ct

# bcc.table's BPF_MAP_TYPE_* values of the maps whose entries come and go.
KEYED_MAP_TYPES = {1: "hash", 5: "percpu_hash", 7: "stack_trace", 9: "lru_hash", 10: "lru_percpu_hash"}


def map_fill(bpf) -> list[tuple[str, int, int]]:
    """(map name, entries now, max_entries) for each keyed map of a loaded ``bcc.BPF``.
    Counting walks the keys (one syscall each): a 10240-entry map costs some milliseconds."""
    from bcc.libbcc import lib

    # libbcc.py declares no argument types for these two: a 64-bit module pointer
    # must not be passed as a C int.
    lib.bpf_num_tables.argtypes, lib.bpf_num_tables.restype = [ct.c_void_p], ct.c_size_t
    lib.bpf_table_name.argtypes, lib.bpf_table_name.restype = [ct.c_void_p, ct.c_ulonglong], ct.c_char_p
    out = []
    for map_id in range(lib.bpf_num_tables(bpf.module)):
        if lib.bpf_table_type_id(bpf.module, map_id) not in KEYED_MAP_TYPES:
            continue
        name = lib.bpf_table_name(bpf.module, map_id)
        table = bpf.get_table(name)
        out.append((name.decode(), sum(1 for _ in table.keys()), int(table.max_entries)))
    return out
