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

int on_poll_wakeup(struct pt_regs *ctx)
{
    u64 poll = PT_REGS_PARM1(ctx) - NS_OFF_VHOST_POLL_WAIT;
    u64 key = PT_REGS_PARM4(ctx);
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

static __always_inline int on_work(struct pt_regs *ctx, int kind)
{
    u64 vq = ns_vhost_work_vq(PT_REGS_PARM1(ctx), kind);
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

int on_tx_kick(struct pt_regs *ctx) { return on_work(ctx, NS_WORK_TX_KICK); }
int on_rx_kick(struct pt_regs *ctx) { return on_work(ctx, NS_WORK_RX_KICK); }
int on_tx_net(struct pt_regs *ctx) { return on_work(ctx, NS_WORK_TX_NET); }
int on_rx_net(struct pt_regs *ctx) { return on_work(ctx, NS_WORK_RX_NET); }

int on_work_return(struct pt_regs *ctx)
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

/* vhost_(vq_)work_queue of the running vq's kick work: a requeue at the weight limit or busy poll. */
static __always_inline int on_queue(u64 work)
{
    u32 tid = bpf_get_current_pid_tgid();
    struct run *r = running.lookup(&tid);
    if (!r || work - NS_OFF_VHOST_POLL_WORK - NS_OFF_VQ_POLL != r->vq)
        return 0;
    struct vq_stats *s = vqs.lookup(&r->vq);
    if (s)
        __sync_fetch_and_add(&s->weight_exhausted, 1);
    return 0;
}

int on_work_queue(struct pt_regs *ctx) { return on_queue(ns_kprobe_arg(ctx, NS_WORK_QUEUE_WORK_ARG)); }
int on_vq_work_queue(struct pt_regs *ctx) { return on_queue(ns_kprobe_arg(ctx, NS_VQ_WORK_QUEUE_WORK_ARG)); }

/* An attempt to signal the guest (vq argument by BTF name); only vqs seen running count. */
static __always_inline int on_signal(u64 vq)
{
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

int on_signal_n(struct pt_regs *ctx) { return on_signal(ns_kprobe_arg(ctx, NS_SIGNAL_N_VQ_ARG)); }
int on_signal_1(struct pt_regs *ctx) { return on_signal(ns_kprobe_arg(ctx, NS_SIGNAL_1_VQ_ARG)); }
int on_signal_plain(struct pt_regs *ctx) { return on_signal(ns_kprobe_arg(ctx, NS_SIGNAL_VQ_ARG)); }

int on_signal_return(struct pt_regs *ctx)
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

int on_eventfd_signal(struct pt_regs *ctx)
{
    u32 tid = bpf_get_current_pid_tgid();
    struct signalling *cur = signalling.lookup(&tid);
    if (!cur || cur->eventfd_seen || PT_REGS_PARM1(ctx) != cur->call_ctx)
        return 0;  /* eventfd_signal -> eventfd_signal_mask: counted once */
    cur->eventfd_seen = 1;
    struct vq_stats *s = vqs.lookup(&cur->vq);
    if (s)
        __sync_fetch_and_add(&s->eventfd_signals, 1);
    return 0;
}

#ifdef NS_HAVE_IRQFD
int on_irqfd_wakeup(struct pt_regs *ctx)
{
    u32 tid = bpf_get_current_pid_tgid();
    struct signalling *cur = signalling.lookup(&tid);
    if (!cur || cur->delivered || !(PT_REGS_PARM4(ctx) & NS_EPOLLIN))
        return 0;
    u64 irqfd = PT_REGS_PARM1(ctx) - NS_OFF_IRQFD_WAIT, eventfd = 0;
    NS_READ(eventfd, irqfd, IRQFD_EVENTFD);
    if (eventfd != cur->call_ctx)
        return 0;
    cur->delivered = 1;
    struct vq_stats *s = vqs.lookup(&cur->vq);
    if (s)
        __sync_fetch_and_add(&s->signals, 1);
    return 0;
}
#endif
