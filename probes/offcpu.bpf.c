/* offcpu: how long threads stay off CPU, with the stacks they blocked in; a dying thread's
 * last switch-out is not stamped: docs/bpf.md#offcpubpfc */
#ifndef __always_inline
#define __always_inline inline __attribute__((always_inline))
#endif

#define NS_STATE_PREEMPTED 0x10000  /* switched out while runnable */
#define NS_STATE_UNKNOWN 0x20000    /* raw tracepoint without prev_state */
#define NS_RAW_TASK_DEAD 0x80       /* raw prev_state of a thread's last switch-out */
#define NS_REPORT_EXITED 0x30       /* the tracepoint's form: EXIT_DEAD | EXIT_ZOMBIE */

struct block_start {
    u64 ts;
    u32 tgid;
    u32 state;
    s32 kstack;
    s32 ustack;
    char comm[16];
};

BPF_HASH(start, u32, struct block_start, NS_MAX_THREADS);
BPF_STACK_TRACE(stacks, NS_STACK_ENTRIES);
/* [0] blocks not timed: start table full, [1] blocks not summed: totals table full */
BPF_PERCPU_ARRAY(lost, u64, 2);

#if NS_AGGREGATE
struct block_key {
    u32 tgid;
    u32 tid;
    u32 state;
    s32 kstack;
    s32 ustack;
    char comm[16];
};
struct block_total {
    u64 total_ns;
    u64 count;
    u64 max_ns;
};
BPF_HASH(totals, struct block_key, struct block_total, NS_MAX_KEYS);
#else
struct block_event {
    u64 start_ns;
    u64 end_ns;
    u32 tgid;
    u32 tid;
    u32 state;
    u32 cpu;
    s32 kstack;
    s32 ustack;
    char comm[16];
};
#include "netsleuth_events.inc.c"
#endif
#include "netsleuth_threads.inc.c"

static __always_inline void count_lost(int idx)
{
    u64 *n = lost.lookup(&idx);
    if (n)
        __sync_fetch_and_add(n, 1);
}

static __always_inline void block_ended(void *ctx, u32 tid, struct block_start *s, u64 now)
{
    u64 delta = now - s->ts;
    if (delta < NS_MIN_BLOCK_NS)
        return;
#if NS_AGGREGATE
    struct block_key key = {.tgid = s->tgid, .tid = tid, .state = s->state, .kstack = s->kstack,
                            .ustack = s->ustack};
    __builtin_memcpy(key.comm, s->comm, sizeof(key.comm));
    struct block_total zero = {}, *t = totals.lookup_or_try_init(&key, &zero);
    if (!t) {
        count_lost(1);
        return;
    }
    __sync_fetch_and_add(&t->total_ns, delta);
    __sync_fetch_and_add(&t->count, 1);
    if (delta > t->max_ns)
        t->max_ns = delta;
#else
    struct block_event e = {.start_ns = s->ts, .end_ns = now, .tgid = s->tgid, .tid = tid,
                            .state = s->state, .kstack = s->kstack, .ustack = s->ustack};
    e.cpu = bpf_get_smp_processor_id();
    __builtin_memcpy(e.comm, s->comm, sizeof(e.comm));
    ns_emit(ctx, &e, sizeof(e));
#endif
}

static __always_inline int on_switch(void *ctx, u32 next_tid, u32 state, int dying)
{
    u64 now = bpf_ktime_get_ns();
    u64 id = bpf_get_current_pid_tgid();
    u32 tid = (u32)id, tgid = id >> 32;

    /* The outgoing thread is `current`: its stacks are the ones it blocks in. */
    if (!dying && thread_match(tgid, tid)) {
        struct block_start s = {.ts = now, .tgid = tgid, .state = state};
        s.kstack = stacks.get_stackid(ctx, 0);
        s.ustack = stacks.get_stackid(ctx, BPF_F_USER_STACK);
        bpf_get_current_comm(&s.comm, sizeof(s.comm));
        if (start.update(&tid, &s) != 0)
            count_lost(0);
    }

    struct block_start *s = start.lookup(&next_tid);
    if (s) {
        struct block_start copy = *s;
        start.delete(&next_tid);
        block_ended(ctx, next_tid, &copy, now);
    }
    return 0;
}

#if NS_RAW_TP
/* args: bool preempt, struct task_struct *prev, *next, unsigned int prev_state (>= 5.18) */
int ns_offcpu_switch(struct bpf_raw_tracepoint_args *ctx)
{
    u32 next_tid = 0;
    bpf_probe_read_kernel(&next_tid, sizeof(next_tid), (char *)ctx->args[2] + NS_OFF_TASK_PID);
    u32 state = NS_STATE_UNKNOWN;
    if (ctx->args[0])
        state = NS_STATE_PREEMPTED;
    else if (NS_RAW_HAS_STATE)
        state = (u32)ctx->args[3];
    /* before 5.18 a dying thread cannot be told (docs/bpf.md#offcpubpfc) */
    int dying = NS_RAW_HAS_STATE && state != NS_STATE_PREEMPTED && (state & NS_RAW_TASK_DEAD);
    return on_switch(ctx, next_tid, state, dying);
}
#else
TRACEPOINT_PROBE(sched, sched_switch)
{
    /* prev_state is in the tracepoint's report form: 0x100 = preempted. */
    u32 state = (u32)args->prev_state;
    if (state == 0 || (state & 0x100))
        state = NS_STATE_PREEMPTED;
    int dying = state != NS_STATE_PREEMPTED && (state & NS_REPORT_EXITED);
    return on_switch(args, (u32)args->next_pid, state, dying);
}
#endif
