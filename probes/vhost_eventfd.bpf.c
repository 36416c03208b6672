/* vhost-eventfd-count: per vhost-net virtqueue, counters in the kernel, read every interval;
 * where each is counted: docs/bpf.md#vhost_eventfdbpfc */
#include "netsleuth.h"
#include "netsleuth_vhost.inc.c"

struct vq_stats {
    u64 kicks;
    u64 net_wakeups;
    u64 runs;
    u64 busy_ns;
    u64 signal_attempts;
    u64 eventfd_signals;
    u64 signals;
    u64 weight_exhausted;
    u64 cpus;            /* bit per CPU (< 64) the worker ran this vq's work on */
    u32 worker_tid;
    u32 worker_tgid;
    u32 kicker_tgid;     /* the process whose thread kicked: QEMU (ioeventfd runs in the vCPU) */
    u16 queue;
    u8 rx;
    u8 has_tap;
    char worker_comm[16];
    char device[16];
};

BPF_HASH(vqs, u64, struct vq_stats, NS_MAX_VQS);

struct run {
    u64 vq;
    u64 t0;
};
BPF_HASH(running, u32, struct run, 1024);  /* worker tid -> the run in progress */

struct signalling {
    u64 vq;
    u64 call_ctx;
    u64 t;               /* when the attempt began: a left-over (a missed return) is replaced */
    u32 depth;           /* nested signal functions of one attempt */
    u8 eventfd_seen;
    u8 delivered;
};
BPF_HASH(signalling, u32, struct signalling, 1024);  /* tid -> the attempt in progress */
#define NS_STALE_NS 1000000000ULL  /* an attempt takes µs: one older than 1 s lost its return */

static __always_inline struct vq_stats *vq_entry(u64 vq, int kind)
{
    struct vq_stats init = {};
    init.rx = ns_vhost_kind_is_rx(kind);
    return vqs.lookup_or_try_init(&vq, &init);
}

/* vhost_poll_wakeup(wait, mode, sync, key) */
static __always_inline int at_poll_wakeup(void *wait, void *key_arg)
{
    u64 poll = (u64)wait - NS_OFF_VHOST_POLL_WAIT;
    u64 key = (u64)key_arg;
    u64 fn = 0;
    u32 mask = 0;  /* __poll_t */
    NS_READ(mask, poll, VHOST_POLL_MASK);
    if (!(key & mask))
        return 0;  /* the kernel ignores this wakeup too */
    NS_READ(fn, poll + NS_OFF_VHOST_POLL_WORK, VHOST_WORK_FN);
    int kind = ns_vhost_work_kind(fn);
    if (kind == NS_WORK_OTHER)
        return 0;  /* another vhost device (vsock, scsi) */
    struct vq_stats *s = vq_entry(ns_vhost_work_vq(poll + NS_OFF_VHOST_POLL_WORK, kind), kind);
    if (!s)
        return 0;
    if (ns_vhost_kind_is_kick(kind)) {
        __sync_fetch_and_add(&s->kicks, 1);
        s->kicker_tgid = bpf_get_current_pid_tgid() >> 32;
    } else {
        __sync_fetch_and_add(&s->net_wakeups, 1);
    }
    return 0;
}
NS_ENTRY_HOOK2(on_poll_wakeup, 1, 4, at_poll_wakeup)

static __always_inline int on_work(void *work, int kind)
{
    u64 vq = ns_vhost_work_vq((u64)work, kind);
    struct vq_stats *s = vq_entry(vq, kind);
    if (!s)
        return 0;
    u64 id = bpf_get_current_pid_tgid();
    u32 tid = id;
    struct run r = {.vq = vq, .t0 = bpf_ktime_get_ns()};
    running.update(&tid, &r);
    __sync_fetch_and_add(&s->runs, 1);
    u32 cpu = bpf_get_smp_processor_id();
    if (cpu < 64)
        s->cpus |= 1ULL << cpu;  /* one worker runs a vq: no concurrent writer */
    /* Identity, refreshed each run (cheap: once per run, not per packet). */
    s->worker_tid = tid;
    s->worker_tgid = id >> 32;
    bpf_get_current_comm(s->worker_comm, sizeof(s->worker_comm));
    u16 queue = 0;
    s->has_tap = ns_vq_tap(vq, s->device, &queue);
    s->queue = queue;
    return 0;
}

NS_ENTRY_HOOK(on_tx_kick, 1, on_work, NS_WORK_TX_KICK)
NS_ENTRY_HOOK(on_rx_kick, 1, on_work, NS_WORK_RX_KICK)
NS_ENTRY_HOOK(on_tx_net, 1, on_work, NS_WORK_TX_NET)
NS_ENTRY_HOOK(on_rx_net, 1, on_work, NS_WORK_RX_NET)

static __always_inline int at_work_return(void *ctx)
{
    u32 tid = bpf_get_current_pid_tgid();
    struct run *r = running.lookup(&tid);
    if (!r)
        return 0;
    struct vq_stats *s = vqs.lookup(&r->vq);
    if (s)
        __sync_fetch_and_add(&s->busy_ns, bpf_ktime_get_ns() - r->t0);
    running.delete(&tid);
    return 0;
}
NS_EXIT_HOOK(on_work_return, at_work_return)

/* vhost_(vq_)work_queue of the running vq's kick work: a requeue at the weight limit or busy poll. */
static __always_inline int on_queue(void *work_arg)
{
    u64 work = (u64)work_arg;
    u32 tid = bpf_get_current_pid_tgid();
    struct run *r = running.lookup(&tid);
    if (!r || work - NS_OFF_VHOST_POLL_WORK - NS_OFF_VQ_POLL != r->vq)
        return 0;
    struct vq_stats *s = vqs.lookup(&r->vq);
    if (s)
        __sync_fetch_and_add(&s->weight_exhausted, 1);
    return 0;
}

NS_ENTRY_HOOK(on_work_queue, NS_WORK_QUEUE_WORK_ARG, on_queue)
NS_ENTRY_HOOK(on_vq_work_queue, NS_VQ_WORK_QUEUE_WORK_ARG, on_queue)

/* An attempt to signal the guest (vq argument by BTF name); only vqs seen running count. */
static __always_inline int on_signal(void *vq_arg)
{
    u64 vq = (u64)vq_arg;
    u32 tid = bpf_get_current_pid_tgid();
    u64 now = bpf_ktime_get_ns();
    struct signalling *cur = signalling.lookup(&tid);
    if (cur && now - cur->t < NS_STALE_NS) {
        cur->depth++;  /* vhost_signal called by an outer signal function: same attempt */
        return 0;
    }
    struct vq_stats *s = vqs.lookup(&vq);
    if (!s)
        return 0;
    __sync_fetch_and_add(&s->signal_attempts, 1);
    struct signalling sig = {.vq = vq, .call_ctx = ns_vq_call_ctx(vq), .t = now, .depth = 1};
    signalling.update(&tid, &sig);
    return 0;
}

NS_ENTRY_HOOK(on_signal_n, NS_SIGNAL_N_VQ_ARG, on_signal)
NS_ENTRY_HOOK(on_signal_1, NS_SIGNAL_1_VQ_ARG, on_signal)
NS_ENTRY_HOOK(on_signal_plain, NS_SIGNAL_VQ_ARG, on_signal)

static __always_inline int at_signal_return(void *ctx)
{
    u32 tid = bpf_get_current_pid_tgid();
    struct signalling *cur = signalling.lookup(&tid);
    if (!cur)
        return 0;
    if (cur->depth > 1) {
        cur->depth--;
        return 0;
    }
    signalling.delete(&tid);
    return 0;
}
NS_EXIT_HOOK(on_signal_return, at_signal_return)

/* eventfd_signal(ctx, n) */
static __always_inline int at_eventfd_signal(void *eventfd)
{
    u32 tid = bpf_get_current_pid_tgid();
    struct signalling *cur = signalling.lookup(&tid);
    if (!cur || cur->eventfd_seen || (u64)eventfd != cur->call_ctx)
        return 0;  /* eventfd_signal -> eventfd_signal_mask: counted once */
    cur->eventfd_seen = 1;
    struct vq_stats *s = vqs.lookup(&cur->vq);
    if (s)
        __sync_fetch_and_add(&s->eventfd_signals, 1);
    return 0;
}
NS_ENTRY_HOOK(on_eventfd_signal, 1, at_eventfd_signal)

#ifdef NS_HAVE_IRQFD
/* irqfd_wakeup(wait, mode, sync, key) */
static __always_inline int at_irqfd_wakeup(void *wait, void *key)
{
    u32 tid = bpf_get_current_pid_tgid();
    struct signalling *cur = signalling.lookup(&tid);
    if (!cur || cur->delivered || !((u64)key & NS_EPOLLIN))
        return 0;
    u64 irqfd = (u64)wait - NS_OFF_IRQFD_WAIT, eventfd = 0;
    NS_READ(eventfd, irqfd, IRQFD_EVENTFD);
    if (eventfd != cur->call_ctx)
        return 0;
    cur->delivered = 1;
    struct vq_stats *s = vqs.lookup(&cur->vq);
    if (s)
        __sync_fetch_and_add(&s->signals, 1);
    return 0;
}
NS_ENTRY_HOOK2(on_irqfd_wakeup, 1, 4, at_irqfd_wakeup)
#endif
