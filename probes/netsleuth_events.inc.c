/* The event stream of an event probe, with flow control.  BCC reads a perf
 * buffer for as long as events keep coming, so under a flood its poll never
 * returns to Python: no stop signal is acted on and the backlog grows without
 * bound.  User space sets hold[0] when it stops or falls behind; events are then
 * held back (counted in hold[1]) until it clears it, and the poll returns.
 *
 * This file calls maps, which BCC rewrites only in the main file: the loader
 * pastes it in where a program includes it (probes/runtime/loader.py). */
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
