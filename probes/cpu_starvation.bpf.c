/* cpu-starvation: run-queue delay per thread, and who held the CPU meanwhile (each CPU's
 * last NS_RUNS runs while a traced thread waits): docs/bpf.md#cpu_starvationbpfc */

struct hist_key {
    u32 tid;
    u32 slot;  /* floor(log2) of the delay in microseconds */
};
struct thread_total {
    u64 count;
    u64 total_ns;
    u64 max_ns;
};
struct instead_key {
    u32 tgid;  /* 0: the idle task */
};
struct instead_total {
    u64 wait_ns;
    u64 count;
};

#define NS_RUNS 16
struct run {
    u64 start;
    u64 end;
    u32 tgid;  /* 0: idle */
    u32 pad;
};
struct cpu_runs {
    u64 since;  /* the current task's switch-in */
    u32 next;   /* ring slot to write */
    struct run r[NS_RUNS];
};

BPF_PERCPU_ARRAY(runs, struct cpu_runs, 1);  /* read and written on its own CPU only */
BPF_HASH(queued, u32, u64, NS_MAX_THREADS);  /* tid -> when it became runnable */
BPF_ARRAY(waiting, s64, 1);  /* entries in `queued`: while 0, no CPU keeps its runs */
BPF_HASH(hist, struct hist_key, u64, NS_MAX_KEYS);
BPF_HASH(totals, u32, struct thread_total, NS_MAX_THREADS);
BPF_HASH(instead, struct instead_key, struct instead_total, NS_MAX_KEYS);
/* [0] waits not counted: a table was full */
BPF_PERCPU_ARRAY(lost, u64, 1);
#include "netsleuth_threads.inc.c"

static inline __attribute__((always_inline)) void count_lost(void)
{
    int zero = 0;
    u64 *n = lost.lookup(&zero);
    if (n)
        (*n)++;
}

static inline __attribute__((always_inline)) void add_waiting(s64 n)
{
    int zero = 0;
    s64 *w = waiting.lookup(&zero);
    if (w)
        __sync_fetch_and_add(w, n);
}

static inline __attribute__((always_inline)) void queue(u32 tid, u64 now)
{
    if (queued.lookup(&tid)) {
        queued.update(&tid, &now);
        return;
    }
    if (queued.update(&tid, &now) != 0)
        count_lost();
    else
        add_waiting(1);
}

static inline __attribute__((always_inline)) void unqueue(u32 tid)
{
    if (queued.delete(&tid) == 0)
        add_waiting(-1);
}

static inline __attribute__((always_inline)) void stamp(void *p)
{
    u32 tid = 0, tgid = 0;
    bpf_probe_read_kernel(&tid, sizeof(tid), (char *)p + NS_OFF_TASK_PID);
    bpf_probe_read_kernel(&tgid, sizeof(tgid), (char *)p + NS_OFF_TASK_TGID);
    if (!thread_match(tgid, tid))
        return;
    queue(tid, bpf_ktime_get_ns());
}

/* args: struct task_struct *p */
int ns_runq_wakeup(struct bpf_raw_tracepoint_args *ctx)
{
    stamp((void *)ctx->args[0]);
    return 0;
}

/* The runs of this CPU within [from, to] credited to their tasks. */
static inline __attribute__((always_inline)) void credit_runs(struct cpu_runs *ring, u64 from, u64 to)
{
#pragma unroll
    for (int i = 0; i < NS_RUNS; i++) {
        struct run *r = &ring->r[i];
        u64 lo = r->start > from ? r->start : from;
        u64 hi = r->end < to ? r->end : to;
        if (!r->end || hi <= lo)
            continue;
        struct instead_key ik = {.tgid = r->tgid};
        struct instead_total iz = {}, *it = instead.lookup_or_try_init(&ik, &iz);
        if (!it) {
            count_lost();
            continue;
        }
        __sync_fetch_and_add(&it->wait_ns, hi - lo);
        __sync_fetch_and_add(&it->count, 1);
    }
}

/* args: bool preempt, struct task_struct *prev, *next, unsigned int prev_state (>= 5.18) */
int ns_runq_switch(struct bpf_raw_tracepoint_args *ctx)
{
    u64 now = bpf_ktime_get_ns();
    u64 id = bpf_get_current_pid_tgid();  /* prev */
    u32 prev_tid = (u32)id, prev_tgid = id >> 32;
    int zero_idx = 0;
    struct cpu_runs *ring = runs.lookup(&zero_idx);
    if (!ring)
        return 0;
    /* prev's run ends: into the ring while a traced thread waits (ours too: they take turns) */
    s64 *w = waiting.lookup(&zero_idx);
    if (ring->since && w && *w > 0) {
        u32 slot = ring->next % NS_RUNS;
        struct run *r = &ring->r[slot];
        r->start = ring->since;
        r->end = now;
        r->tgid = prev_tid ? prev_tgid : 0;
        ring->next = slot + 1;
    }
    ring->since = now;
    int runnable = ctx->args[0] != 0;
    if (NS_RAW_HAS_STATE && (u32)ctx->args[3] == 0)
        runnable = 1;  /* TASK_RUNNING: yielded or preempted */
    if (thread_match(prev_tgid, prev_tid)) {
        if (runnable)
            queue(prev_tid, now);
        else
            unqueue(prev_tid);
    }

    u32 next_tid = 0;
    bpf_probe_read_kernel(&next_tid, sizeof(next_tid), (char *)ctx->args[2] + NS_OFF_TASK_PID);
    u64 *since = queued.lookup(&next_tid);
    if (!since)
        return 0;
    u64 queued_at = *since, delta = now - queued_at;
    unqueue(next_tid);

    u64 us = delta / 1000;
    struct hist_key hk = {.tid = next_tid, .slot = us ? bpf_log2l(us) - 1 : 0};  /* bpf_log2l is floor + 1 */
    u64 zero = 0, *n = hist.lookup_or_try_init(&hk, &zero);
    struct thread_total tz = {}, *t = totals.lookup_or_try_init(&next_tid, &tz);
    if (!n || !t) {
        count_lost();
        return 0;
    }
    __sync_fetch_and_add(n, 1);
    __sync_fetch_and_add(&t->count, 1);
    __sync_fetch_and_add(&t->total_ns, delta);
    if (delta > t->max_ns)
        t->max_ns = delta;

    credit_runs(ring, queued_at, now);
    return 0;
}
