/* An event probe's stream, held back (counted) while hold[0] is set: docs/bpf.md#netsleuth_eventsincc-flow-control */
BPF_PERF_OUTPUT(events);
BPF_ARRAY(hold, u64, 2);

static inline __attribute__((always_inline)) void ns_emit(void *ctx, void *event, u32 size)
{
    int i = 0;
    u64 *held = hold.lookup(&i);
    if (held && *held) {
        i = 1;
        u64 *count = hold.lookup(&i);
        if (count)
            __sync_fetch_and_add(count, 1);
        return;
    }
    events.perf_submit(ctx, event, size);
}
