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

/* A queue's ring as seen on one CPU: one entry per queue, no other map per packet. */
struct ring_state {
    u64 xmits;      /* packets tun_net_xmit was given */
    u64 found_full; /* ... that found the ring full (ptr_ring_produce fails: dropped) */
    u64 epoch;      /* the interval max_pending belongs to (ring_epoch's number) */
    u32 max_pending;/* highest fill seen in that interval */
    u32 size;
};

BPF_PERCPU_ARRAY(rings, struct ring_state, NS_TUN_MAX_QUEUES);  /* read and written on its own CPU only */
/* The number of the interval user space is in: it adds one after each read, which
 * starts every queue's maximum again (a plain array: its lookup is inlined). */
BPF_ARRAY(ring_epoch, u64, 1);

/* tun_net_xmit(skb, dev): queue skb->queue_mapping of tun_struct netdev_priv(dev) */
static __always_inline int tun_xmit(void *skb, void *dev)
{
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

    struct ring_state *r = rings.lookup(&queue);
    if (!r)
        return 0;
    r->xmits++;
    if (slot)
        r->found_full++;
    u32 zero = 0;
    u64 *now = ring_epoch.lookup(&zero);
    u64 epoch = now ? *now : 0;
    if (r->epoch != epoch || pending > r->max_pending) {
        r->epoch = epoch;
        r->max_pending = pending;
    }
    r->size = size;
    return 0;
}
NS_ENTRY_HOOK2(ns_tun_net_xmit, 1, 2, tun_xmit)
#endif
