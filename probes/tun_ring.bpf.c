/* tun-ring-monitor: one tap's drops by queue and reason, and with NS_RING its queues' ptr_ring
 * fill at each tun_net_xmit (docs/output-virt.md) */
#include "netsleuth.h"

struct queue_reason {
    u32 queue;
    u32 reason;
};

BPF_PERCPU_HASH(drops, struct queue_reason, u64, 1024);

static __always_inline int ns_on_drop(void *ctx, void *skb, u32 reason, u64 location)
{
    if (!ns_dev_match(ns_skb_dev(skb)))
        return 0;
#if NS_F_SADDR || NS_F_DADDR || NS_F_SPORT || NS_F_DPORT || NS_F_PROTO
    struct ns_pkt pkt = {};
    ns_skb_parse(skb, &pkt);
    if (!ns_flow_match(&pkt.flow))
        return 0;
#endif
    struct queue_reason key = {.reason = reason};
    u16 queue = 0;
    NS_READ(queue, skb, SKB_QUEUE_MAPPING);
    key.queue = queue;
    u64 zero = 0;
    u64 *n = drops.lookup_or_try_init(&key, &zero);
    if (n)
        __sync_fetch_and_add(n, 1);
    return 0;
}

NS_DEFINE_DROP_HOOK()

#if NS_RING
#define NS_TUN_MAX_QUEUES 256  /* MAX_TAP_QUEUES: tun_struct.tfiles[] */
/* netdev_priv(): the tun_struct follows the net_device, NETDEV_ALIGN (32) aligned. */
#define NS_TUN_PRIV ((NS_OFF_NETDEV_SIZE + 31) & ~31)

struct ring_count {
    u64 xmits;      /* packets tun_net_xmit was given */
    u64 found_full; /* ... that found the ring full (ptr_ring_produce fails: dropped) */
};

BPF_PERCPU_HASH(ring_counts, u32, struct ring_count, NS_TUN_MAX_QUEUES);
/* Highest fill seen since user space last cleared it (each interval). */
BPF_PERCPU_HASH(ring_max, u32, u32, NS_TUN_MAX_QUEUES);
BPF_PERCPU_HASH(ring_size, u32, u32, NS_TUN_MAX_QUEUES);

/* tun_net_xmit(skb, dev): queue skb->queue_mapping of tun_struct netdev_priv(dev) */
int ns_tun_net_xmit(struct pt_regs *ctx)
{
    void *skb = (void *)PT_REGS_PARM1(ctx);
    void *dev = (void *)PT_REGS_PARM2(ctx);
    if (!ns_dev_match(dev))
        return 0;
    u16 q16 = 0;
    NS_READ(q16, skb, SKB_QUEUE_MAPPING);
    u32 queue = q16;
    void *tun = (char *)dev + NS_TUN_PRIV;
    u32 numqueues = 0;
    NS_READ(numqueues, tun, TUN_NUMQUEUES);
    if (queue >= numqueues || queue >= NS_TUN_MAX_QUEUES)
        return 0;  /* tun drops it itself: the drop hook counts it */
    void *tfile = NULL;
    bpf_probe_read_kernel(&tfile, sizeof(tfile), (char *)tun + NS_OFF_TUN_TFILES + queue * sizeof(void *));
    if (!tfile)
        return 0;
    void *ring = (char *)tfile + NS_OFF_TFILE_TX_RING;
    int producer = 0, head = 0, size = 0;
    void **slots = NULL;
    NS_READ(producer, ring, PTR_RING_PRODUCER);
    NS_READ(head, ring, PTR_RING_CONSUMER_HEAD);
    NS_READ(size, ring, PTR_RING_SIZE);
    NS_READ(slots, ring, PTR_RING_QUEUE);
    if (size <= 0 || !slots)
        return 0;
    void *slot = NULL;  /* the producer's slot is taken exactly when the ring is full */
    bpf_probe_read_kernel(&slot, sizeof(slot), &slots[producer]);
    /* full even when partly read: the consumer frees slots in batches (consumer_tail) */
    u32 pending = slot ? size : (producer >= head ? producer - head : producer + size - head);

    struct ring_count zero = {};
    struct ring_count *c = ring_counts.lookup_or_try_init(&queue, &zero);
    if (c) {
        __sync_fetch_and_add(&c->xmits, 1);
        if (slot)
            __sync_fetch_and_add(&c->found_full, 1);
    }
    u32 none = 0;
    u32 *max = ring_max.lookup_or_try_init(&queue, &none);
    if (max && pending > *max)
        *max = pending;  /* per CPU: no other writer */
    u32 usize = size;
    u32 *known = ring_size.lookup(&queue);
    if (!known || *known != usize)
        ring_size.update(&queue, &usize);
    return 0;
}
#endif
