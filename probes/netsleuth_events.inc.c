/* An event probe's stream, sent only as far as user space grants credit: docs/bpf.md#netsleuth_eventsincc-flow-control */
BPF_PERF_OUTPUT(events);
BPF_ARRAY(credit, s64, 2);

static inline __attribute__((always_inline)) void ns_emit(void *ctx, void *event, u32 size)
{
    int i = 0;
    s64 *left = credit.lookup(&i);
    if (!left || *left <= 0) {
        i = 1;
        s64 *held = credit.lookup(&i);
        if (held)
            __sync_fetch_and_add(held, 1);
        return;
    }
    __sync_fetch_and_add(left, -1);
    events.perf_submit(ctx, event, size);
}
