/* vhost-queue-correlation-details: each vhost-net work item from queued to done, per vq
 * totals and a wait histogram, an event past NS_THRESHOLD_NS: docs/bpf.md#vhost_queuebpfc */
#include "netsleuth.h"
#include "netsleuth_vhost.inc.c"
#include "netsleuth_events.inc.c"

#define NS_TRIGGER_KICK 1
#define NS_TRIGGER_SOCKET 2
#define NS_TRIGGER_REQUEUE 3

struct queued {
    u64 t;
    u32 waker_tid;
    u32 waker_pid;
    u8 trigger;
    char waker_comm[16];
};
BPF_HASH(queued, u64, struct queued, NS_MAX_VQS);  /* work item -> when and by whom */

struct run {
    u64 vq;
    u64 t0;
    u64 wait_ns;           /* 0 when the queueing was not seen (probe started in between) */
    u32 waker_tid;
    u32 waker_pid;
    u32 tun_pending;       /* tap ring entries waiting at the start (rx) */
    u32 tun_size;
    u32 batch_pending;     /* skbs vhost already took from the ring, not yet given to the guest (rx) */
    u16 used0;
    u16 avail_pending;     /* buffers the guest posted that vhost saw and has not used */
    u16 guest_empty;       /* vhost_get_vq_desc found no buffer: times in this run */
    u8 weight;
    u8 trigger;
    u8 kind;
    u8 seen_queued;
    char waker_comm[16];
};
BPF_HASH(running, u32, struct run, 1024);  /* worker tid -> its run */

struct vq_totals {
    u64 works;
    u64 unseen;            /* works whose queueing the probe did not see */
    u64 wait_ns;
    u64 wait_max_ns;
    u64 run_ns;
    u64 run_max_ns;
    u64 packets;
    u64 guest_empty;
    u64 weight_exhausted;
    u64 slow;
    u64 tun_pending_max;
    u64 cpus;
    u32 worker_tid;
    u32 worker_pid;
    u16 queue;
    u8 rx;
    u8 has_tap;
    char worker_comm[16];
    char device[16];
};
BPF_HASH(vqs, u64, struct vq_totals, NS_MAX_VQS);

struct hist_key {
    u64 vq;
    u64 slot;
};
BPF_HASH(wait_hist, struct hist_key, u64, NS_MAX_VQS * 4);  /* (vq, log2 µs of wait) -> works */

struct event {
    u64 ts;
    u64 vq;
    u64 wait_ns;
    u64 run_ns;
    u32 cpu;
    u32 tid;
    u32 pid;
    u32 waker_tid;
    u32 waker_pid;
    u32 tun_pending;
    u32 tun_size;
    u32 batch_pending;
    u16 queue;
    u16 packets;
    u16 avail_pending;
    u16 guest_empty;
    u8 trigger;
    u8 rx;
    u8 weight;
    u8 has_tap;
    char comm[16];
    char waker_comm[16];
    char device[16];
};

static __always_inline void note_queued(u64 work, u8 trigger)
{
    struct queued q = {.t = bpf_ktime_get_ns(), .trigger = trigger};
    u64 id = bpf_get_current_pid_tgid();
    q.waker_tid = id;
    q.waker_pid = id >> 32;
    bpf_get_current_comm(q.waker_comm, sizeof(q.waker_comm));
    queued.insert(&work, &q);  /* BPF_NOEXIST: already queued, coalesced like the kernel does */
}

static __always_inline int work_of_poll(u64 poll, u64 *work)
{
    u64 fn = 0;
    *work = poll + NS_OFF_VHOST_POLL_WORK;
    NS_READ(fn, *work, VHOST_WORK_FN);
    return ns_vhost_work_kind(fn);
}

/* vhost_poll_wakeup(wait, mode, sync, key) */
static __always_inline int at_poll_wakeup(void *wait, void *key)
{
    u64 poll = (u64)wait - NS_OFF_VHOST_POLL_WAIT, work;
    u32 mask = 0;  /* __poll_t */
    NS_READ(mask, poll, VHOST_POLL_MASK);
    if (!((u64)key & mask))
        return 0;
    int kind = work_of_poll(poll, &work);
    if (kind != NS_WORK_OTHER)
        note_queued(work, ns_vhost_kind_is_kick(kind) ? NS_TRIGGER_KICK : NS_TRIGGER_SOCKET);
    return 0;
}
NS_ENTRY_HOOK2(on_poll_wakeup, 1, 4, at_poll_wakeup)

static __always_inline int at_poll_queue(void *poll)
{
    u64 work;
    if (work_of_poll((u64)poll, &work) != NS_WORK_OTHER)
        note_queued(work, NS_TRIGGER_REQUEUE);
    return 0;
}
NS_ENTRY_HOOK(on_poll_queue, 1, at_poll_queue)

/* Entries in the tap's ptr_ring not yet consumed (tun_ring_monitor's "pending"). */
static __always_inline u32 tun_ring_pending(u64 vq, u32 *size)
{
    u64 tfile = ns_vq_tfile(vq);
    if (!tfile)
        return 0;
    u64 ring = tfile + NS_OFF_TFILE_TX_RING, queue = 0, slot = 0;
    int producer = 0, head = 0, sz = 0;
    NS_READ(producer, ring, PTR_RING_PRODUCER);
    NS_READ(head, ring, PTR_RING_CONSUMER_HEAD);
    NS_READ(sz, ring, PTR_RING_SIZE);
    NS_READ(queue, ring, PTR_RING_QUEUE);
    *size = sz;
    if (sz <= 0)
        return 0;
    if (producer > head)
        return producer - head;
    if (producer < head)
        return producer + sz - head;  /* wrapped (no signed modulo in BPF) */
    bpf_probe_read_kernel(&slot, sizeof(slot), (void *)(queue + 8 * (u64)producer));
    return slot ? sz : 0;  /* producer == head: empty, or full when the slot is taken */
}

static __always_inline int on_work(void *work_arg, int kind)
{
    u64 work = (u64)work_arg, now = bpf_ktime_get_ns();
    u32 tid = bpf_get_current_pid_tgid();
    struct run r = {.vq = ns_vhost_work_vq(work, kind), .t0 = now, .kind = kind};
    struct queued *q = queued.lookup(&work);
    if (q) {
        r.wait_ns = now - q->t;
        r.seen_queued = 1;
        r.trigger = q->trigger;
        r.waker_tid = q->waker_tid;
        r.waker_pid = q->waker_pid;
        __builtin_memcpy(r.waker_comm, q->waker_comm, sizeof(r.waker_comm));
        queued.delete(&work);
    }
    u16 last_avail = 0, avail = 0;
    NS_READ(r.used0, r.vq, VQ_LAST_USED_IDX);
    NS_READ(last_avail, r.vq, VQ_LAST_AVAIL_IDX);
    NS_READ(avail, r.vq, VQ_AVAIL_IDX);
    r.avail_pending = avail - last_avail;
    if (ns_vhost_kind_is_rx(kind)) {
        r.tun_pending = tun_ring_pending(r.vq, &r.tun_size);
        int head = 0, tail = 0;
        u64 nvq = r.vq - NS_OFF_VNET_NVQ_VQ;
        NS_READ(head, nvq, VNET_NVQ_RXQ_HEAD);
        NS_READ(tail, nvq, VNET_NVQ_RXQ_TAIL);
        r.batch_pending = tail > head ? tail - head : 0;
    }
    running.update(&tid, &r);
    return 0;
}

NS_ENTRY_HOOK(on_tx_kick, 1, on_work, NS_WORK_TX_KICK)
NS_ENTRY_HOOK(on_rx_kick, 1, on_work, NS_WORK_RX_KICK)
NS_ENTRY_HOOK(on_tx_net, 1, on_work, NS_WORK_TX_NET)
NS_ENTRY_HOOK(on_rx_net, 1, on_work, NS_WORK_RX_NET)

static __always_inline int at_get_vq_desc_return(u64 ret)
{
    u32 tid = bpf_get_current_pid_tgid();
    struct run *r = running.lookup(&tid);
    if (!r)
        return 0;
    u32 num = 0;
    NS_READ(num, r->vq, VQ_NUM);
    if ((u32)ret == num && r->guest_empty < 0xffff)
        r->guest_empty++;  /* vhost_get_vq_desc returns vq->num when no buffer is available */
    return 0;
}
NS_RETURN_HOOK(on_get_vq_desc_return, NS_RET_AT_GET_VQ_DESC, at_get_vq_desc_return)

static __always_inline int at_exceeds_weight_return(u64 ret)
{
    u32 tid = bpf_get_current_pid_tgid();
    struct run *r = running.lookup(&tid);
    if (r && (ret & 1))
        r->weight = 1;
    return 0;
}
NS_RETURN_HOOK(on_exceeds_weight_return, NS_RET_AT_EXCEEDS_WEIGHT, at_exceeds_weight_return)

static __always_inline void update_max(u64 *max, u64 v)
{
    if (v > *max)
        *max = v;  /* one worker per vq: no concurrent writer */
}

static __always_inline int at_work_return(void *ctx)
{
    u64 id = bpf_get_current_pid_tgid();
    u32 tid = id;
    struct run *r = running.lookup(&tid);
    if (!r)
        return 0;
    u64 now = bpf_ktime_get_ns(), run_ns = now - r->t0;
    u16 used1 = 0;
    NS_READ(used1, r->vq, VQ_LAST_USED_IDX);
    u16 packets = used1 - r->used0;
    u32 cpu = bpf_get_smp_processor_id();

    struct vq_totals init = {.rx = ns_vhost_kind_is_rx(r->kind)};
    struct vq_totals *t = vqs.lookup_or_try_init(&r->vq, &init);
    if (t) {
        u16 queue = 0;
        t->has_tap = ns_vq_tap(r->vq, t->device, &queue);
        t->queue = queue;
        t->worker_tid = tid;
        t->worker_pid = id >> 32;
        bpf_get_current_comm(t->worker_comm, sizeof(t->worker_comm));
        __sync_fetch_and_add(&t->works, 1);
        __sync_fetch_and_add(&t->run_ns, run_ns);
        __sync_fetch_and_add(&t->packets, packets);
        __sync_fetch_and_add(&t->guest_empty, r->guest_empty);
        __sync_fetch_and_add(&t->weight_exhausted, r->weight);
        update_max(&t->run_max_ns, run_ns);
        update_max(&t->tun_pending_max, r->tun_pending);
        if (cpu < 64)
            t->cpus |= 1ULL << cpu;
        if (r->seen_queued) {
            __sync_fetch_and_add(&t->wait_ns, r->wait_ns);
            update_max(&t->wait_max_ns, r->wait_ns);
            if (r->wait_ns >= NS_THRESHOLD_NS)
                __sync_fetch_and_add(&t->slow, 1);
        } else {
            __sync_fetch_and_add(&t->unseen, 1);
        }
    }
    if (r->seen_queued) {
        struct hist_key hk = {.vq = r->vq, .slot = ns_log2(r->wait_ns / 1000)};
        u64 zero = 0;
        u64 *c = wait_hist.lookup_or_try_init(&hk, &zero);
        if (c)
            __sync_fetch_and_add(c, 1);
    }
    if (r->seen_queued && r->wait_ns >= NS_THRESHOLD_NS) {
        struct event e = {.ts = now, .vq = r->vq, .wait_ns = r->wait_ns, .run_ns = run_ns, .cpu = cpu, .tid = tid, .pid = id >> 32,
                          .waker_tid = r->waker_tid, .waker_pid = r->waker_pid, .tun_pending = r->tun_pending,
                          .tun_size = r->tun_size, .batch_pending = r->batch_pending, .packets = packets,
                          .avail_pending = r->avail_pending, .guest_empty = r->guest_empty, .trigger = r->trigger,
                          .rx = ns_vhost_kind_is_rx(r->kind), .weight = r->weight};
        __builtin_memcpy(e.waker_comm, r->waker_comm, sizeof(e.waker_comm));
        bpf_get_current_comm(e.comm, sizeof(e.comm));
        u16 queue = 0;
        e.has_tap = ns_vq_tap(r->vq, e.device, &queue);
        e.queue = queue;
        ns_emit(ctx, &e, sizeof(e));
    }
    running.delete(&tid);
    return 0;
}
NS_EXIT_HOOK(on_work_return, at_work_return)
