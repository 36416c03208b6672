/* futex: per thread, waits with their time and wakes with the waiters woken (the guide's
 * futex.bt); cumulative counters, waits in progress in `pending`: docs/bpf.md#futexbpfc */
#ifndef __always_inline
#define __always_inline inline __attribute__((always_inline))
#endif

#define FUTEX_CMD_MASK 0x7f /* without FUTEX_PRIVATE_FLAG (128) and FUTEX_CLOCK_REALTIME (256) */
#define ETIMEDOUT 110
#define EAGAIN 11

enum { KIND_OTHER, KIND_WAIT, KIND_WAKE };

struct pending {
    u64 ts;
    u32 kind;
};

struct futex_stats {
    u64 waits_started;
    u64 waits_ended;
    u64 wait_ns;        /* whole length of the waits that ended */
    u64 wait_timeouts;  /* returned ETIMEDOUT */
    u64 wait_eagain;    /* the futex word had changed: returned without sleeping */
    u64 wake_count;
    u64 woken;          /* waiters the wakes actually woke (their return values) */
    u32 tgid;
    char comm[16];
};

BPF_HASH(pending, u32, struct pending, NS_MAX_THREADS);
BPF_HASH(stats, u32, struct futex_stats, NS_MAX_THREADS);
/* [0] calls not counted: a table was full */
BPF_PERCPU_ARRAY(lost, u64, 1);
#include "netsleuth_threads.inc.c"

static __always_inline u32 futex_kind(int op)
{
    switch (op & FUTEX_CMD_MASK) {
    case 0:   /* FUTEX_WAIT */
    case 9:   /* FUTEX_WAIT_BITSET */
    case 11:  /* FUTEX_WAIT_REQUEUE_PI */
    case 6:   /* FUTEX_LOCK_PI */
    case 13:  /* FUTEX_LOCK_PI2 */
        return KIND_WAIT;
    case 1:   /* FUTEX_WAKE */
    case 10:  /* FUTEX_WAKE_BITSET */
    case 5:   /* FUTEX_WAKE_OP */
    case 7:   /* FUTEX_UNLOCK_PI */
    case 4:   /* FUTEX_CMP_REQUEUE */
        return KIND_WAKE;
    }
    return KIND_OTHER;
}

static __always_inline void count_lost(void)
{
    int idx = 0;
    u64 *n = lost.lookup(&idx);
    if (n)
        __sync_fetch_and_add(n, 1);
}

TRACEPOINT_PROBE(syscalls, sys_enter_futex)
{
    u64 id = bpf_get_current_pid_tgid();
    u32 tid = (u32)id;
    if (!thread_match(id >> 32, tid))
        return 0;
    struct pending p = {.ts = bpf_ktime_get_ns(), .kind = futex_kind((int)args->op)};
    if (p.kind == KIND_OTHER)
        return 0;
    struct futex_stats zero = {}, *s = stats.lookup_or_try_init(&tid, &zero);
    if (!s || pending.update(&tid, &p) != 0) {
        count_lost();
        return 0;
    }
    if (s->comm[0] == 0) {
        s->tgid = id >> 32;
        bpf_get_current_comm(&s->comm, sizeof(s->comm));
    }
    if (p.kind == KIND_WAIT)
        __sync_fetch_and_add(&s->waits_started, 1);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_futex)
{
    u32 tid = (u32)bpf_get_current_pid_tgid();
    struct pending *p = pending.lookup(&tid);
    if (!p)
        return 0;
    u64 delta = bpf_ktime_get_ns() - p->ts;
    u32 kind = p->kind;
    pending.delete(&tid);
    struct futex_stats *s = stats.lookup(&tid);
    if (!s)
        return 0;  /* user space freed it: the thread was taken for gone */
    long ret = args->ret;
    if (kind == KIND_WAIT) {
        __sync_fetch_and_add(&s->waits_ended, 1);
        __sync_fetch_and_add(&s->wait_ns, delta);
        if (ret == -ETIMEDOUT)
            __sync_fetch_and_add(&s->wait_timeouts, 1);
        else if (ret == -EAGAIN)
            __sync_fetch_and_add(&s->wait_eagain, 1);
    } else {
        __sync_fetch_and_add(&s->wake_count, 1);
        if (ret > 0)
            __sync_fetch_and_add(&s->woken, ret);
    }
    return 0;
}
