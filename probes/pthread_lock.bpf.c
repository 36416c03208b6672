/* pthread-lock: one process's pthread lock waits (libc uprobes) with the holder and its CPU
 * time in the hold (the guide's pthread_rwlock_wrlock.bt): docs/bpf.md#pthread_lockbpfc */
#include <uapi/linux/ptrace.h>

enum { KIND_MUTEX, KIND_RDLOCK, KIND_WRLOCK, KIND_UNKNOWN };
/* How the call takes the lock: may wait, never waits (trylock), retaken after a condition wait. */
enum { CALL_WAIT, CALL_TRY, CALL_COND };

struct holder {
    u64 since;
    u64 ran0;      /* its on-CPU ns at acquire */
    u64 queued0;   /* its run-queue wait ns at acquire */
    u32 tid;
    u32 kind;
    char comm[16];
};

struct pending {
    u64 ts;
    u64 lock;
    u32 kind;
    u32 call;
    struct holder holder;  /* found on arrival; tid 0 = unknown */
};

struct release {
    u64 ts;
    u64 since;        /* when the releasing thread had acquired it (0 = unknown) */
    u64 caller;       /* return address of the unlock call */
    u64 ran_ns;       /* on CPU during its hold (since != 0 and NS_HOLDER_SCHED) */
    u64 queued_ns;    /* waiting for a CPU during its hold */
    s32 stack;        /* user stack at the unlock, when someone was waiting */
    u32 tid;
    u32 kind;         /* how the releasing thread held it (KIND_UNKNOWN: not seen taking it) */
    char comm[16];
};

struct wait_event {
    u64 start_ns;
    u64 end_ns;
    u64 lock;
    u64 holder_since;
    u64 release_ns;
    u64 releaser_since;
    u64 releaser_caller;
    u64 releaser_ran_ns;
    u64 releaser_queued_ns;
    u32 waiter_tid;
    u32 holder_tid;
    u32 releaser_tid;
    u32 kind;
    u32 holder_kind;
    u32 releaser_kind;
    s32 waiter_stack;
    s32 releaser_stack;
    char comm[16];
    char holder_comm[16];
    char releaser_comm[16];
};

BPF_HASH(pending, u32, struct pending, NS_MAX_THREADS);
BPF_TABLE("lru_hash", u64, struct holder, holders, NS_MAX_LOCKS);
BPF_TABLE("lru_hash", u64, struct release, releases, NS_MAX_LOCKS);
BPF_TABLE("lru_hash", u64, u64, waiting, NS_MAX_LOCKS);  /* threads inside a lock call, per lock */
BPF_STACK_TRACE(stacks, NS_STACK_ENTRIES);
#include "netsleuth_events.inc.c"

static inline __attribute__((always_inline)) int ours(u64 id)
{
    return !NS_F_TGID || (id >> 32) == NS_F_TGID;
}

static inline __attribute__((always_inline)) void add_waiting(u64 lock, s64 n)
{
    u64 zero = 0, *w = waiting.lookup_or_try_init(&lock, &zero);
    if (w)
        __sync_fetch_and_add(w, n);
}

/* The calling thread's on-CPU and run-queue nanoseconds so far. */
static inline __attribute__((always_inline)) void sched_times(u64 *ran, u64 *queued)
{
#if NS_HOLDER_SCHED
    char *task = (char *)bpf_get_current_task();
    bpf_probe_read_kernel(ran, sizeof(*ran), task + NS_OFF_TASK_SUM_EXEC);
    bpf_probe_read_kernel(queued, sizeof(*queued), task + NS_OFF_TASK_RUN_DELAY);
#endif
}

static inline __attribute__((always_inline)) int enter(struct pt_regs *ctx, u64 lock, u32 kind, u32 call)
{
    u64 id = bpf_get_current_pid_tgid();
    if (!ours(id))
        return 0;
    u32 tid = (u32)id;
    struct pending p = {.ts = bpf_ktime_get_ns(), .lock = lock, .kind = kind, .call = call};
    struct holder *h = holders.lookup(&lock);
    if (h && h->tid != tid)
        p.holder = *h;
    pending.update(&tid, &p);
    if (call != CALL_COND)
        add_waiting(lock, 1);
    return 0;
}

/* The calling thread gives ``lock`` up (unlock, or entering a condition wait). */
static inline __attribute__((always_inline)) void release(struct pt_regs *ctx, u64 lock, u32 tid)
{
    struct release r = {.ts = bpf_ktime_get_ns(), .tid = tid, .stack = -1, .kind = KIND_UNKNOWN};
    struct holder *h = holders.lookup(&lock);
    if (h && h->tid == tid) {
        r.since = h->since;
        r.kind = h->kind;
        u64 ran = 0, queued = 0;
        sched_times(&ran, &queued);
        r.ran_ns = ran - h->ran0;
        r.queued_ns = queued - h->queued0;
        holders.delete(&lock);
    }
    bpf_get_current_comm(&r.comm, sizeof(r.comm));
    u64 *w = waiting.lookup(&lock);
    if (w && *w > 0) {
        /* at entry the frame-pointer walk skips our caller: its address is at the SP */
        r.stack = stacks.get_stackid(ctx, BPF_F_USER_STACK);
        bpf_probe_read_user(&r.caller, sizeof(r.caller), (void *)PT_REGS_SP(ctx));
    }
    releases.update(&lock, &r);
}

int ns_mutex_enter(struct pt_regs *ctx) { return enter(ctx, PT_REGS_PARM1(ctx), KIND_MUTEX, CALL_WAIT); }
int ns_rdlock_enter(struct pt_regs *ctx) { return enter(ctx, PT_REGS_PARM1(ctx), KIND_RDLOCK, CALL_WAIT); }
int ns_wrlock_enter(struct pt_regs *ctx) { return enter(ctx, PT_REGS_PARM1(ctx), KIND_WRLOCK, CALL_WAIT); }
int ns_trymutex_enter(struct pt_regs *ctx) { return enter(ctx, PT_REGS_PARM1(ctx), KIND_MUTEX, CALL_TRY); }
int ns_tryrdlock_enter(struct pt_regs *ctx) { return enter(ctx, PT_REGS_PARM1(ctx), KIND_RDLOCK, CALL_TRY); }
int ns_trywrlock_enter(struct pt_regs *ctx) { return enter(ctx, PT_REGS_PARM1(ctx), KIND_WRLOCK, CALL_TRY); }

/* pthread_cond_*wait(cond, mutex, ...): releases the mutex, retakes it on return. */
int ns_cond_enter(struct pt_regs *ctx)
{
    u64 id = bpf_get_current_pid_tgid();
    if (!ours(id))
        return 0;
    u64 mutex = PT_REGS_PARM2(ctx);
    release(ctx, mutex, (u32)id);
    return enter(ctx, mutex, KIND_MUTEX, CALL_COND);
}

int ns_unlock(struct pt_regs *ctx)
{
    u64 id = bpf_get_current_pid_tgid();
    if (ours(id))
        release(ctx, PT_REGS_PARM1(ctx), (u32)id);
    return 0;
}

int ns_lock_return(struct pt_regs *ctx)
{
    u64 id = bpf_get_current_pid_tgid();
    u32 tid = (u32)id;
    struct pending *pp = pending.lookup(&tid);
    if (!pp)
        return 0;
    struct pending p = *pp;
    pending.delete(&tid);
    u64 now = bpf_ktime_get_ns();
    if (p.call != CALL_COND)
        add_waiting(p.lock, -1);
    if (PT_REGS_RC(ctx) != 0)
        return 0;  /* not acquired: EBUSY, ETIMEDOUT, EDEADLK... */
    struct holder h = {.since = now, .tid = tid, .kind = p.kind};
    sched_times(&h.ran0, &h.queued0);
    bpf_get_current_comm(&h.comm, sizeof(h.comm));
    holders.update(&p.lock, &h);
    if (p.call != CALL_WAIT || now - p.ts < NS_MIN_WAIT_NS)
        return 0;

    struct wait_event e = {.start_ns = p.ts, .end_ns = now, .lock = p.lock, .waiter_tid = tid,
                           .holder_tid = p.holder.tid, .holder_since = p.holder.since, .kind = p.kind,
                           .holder_kind = p.holder.tid ? p.holder.kind : KIND_UNKNOWN,
                           .releaser_kind = KIND_UNKNOWN, .releaser_stack = -1};
    __builtin_memcpy(e.holder_comm, p.holder.comm, sizeof(e.holder_comm));
    /* At the return the walk starts in the caller: the waiter's own call site. */
    e.waiter_stack = stacks.get_stackid(ctx, BPF_F_USER_STACK);
    struct release *r = releases.lookup(&p.lock);
    if (r && r->ts >= p.ts && r->tid != tid) {
        e.releaser_tid = r->tid;
        e.release_ns = r->ts;
        e.releaser_since = r->since;
        e.releaser_stack = r->stack;
        e.releaser_caller = r->caller;
        e.releaser_kind = r->kind;
        e.releaser_ran_ns = r->ran_ns;
        e.releaser_queued_ns = r->queued_ns;
        __builtin_memcpy(e.releaser_comm, r->comm, sizeof(e.releaser_comm));
    }
    bpf_get_current_comm(&e.comm, sizeof(e.comm));
    ns_emit(ctx, &e, sizeof(e));
    return 0;
}
