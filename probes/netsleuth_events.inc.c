/* The event stream of an event probe, with flow control.  BCC reads a perf
 * buffer for as long as events keep coming, and calls Python for each one,
 * so the kernel sends only what user space will decode: before each poll it
 * grants credit[0] events (0 when it stops or is behind); once they are spent,
 * events are held back, counted in credit[1], and the poll returns.  The check
 * and the take are not one atomic step (a fetching atomic needs 5.12): CPUs
 * racing for the last credit send at most one event more each.
 *
 * This file calls maps, which BCC rewrites only in the main file: the loader
 * pastes it in where a program includes it (probes/runtime/loader.py). */
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
