/* qdisc-drops: one device's qdisc drops by (qdisc, reason, location, stage) and (qdisc, flow);
 * after enqueue or refused by it: docs/bpf.md#qdisc_dropsbpfc, docs/output-qdisc.md */
#include "netsleuth.h"

#ifndef NS_QDISC_ENQUEUE_TP
#define NS_QDISC_ENQUEUE_TP 0
#endif
/* The kernel's qdisc drop reasons by number (0: unused slot). */
#ifndef NS_QR0
#define NS_QR0 0
#endif
#ifndef NS_QR1
#define NS_QR1 0
#endif
#ifndef NS_QR2
#define NS_QR2 0
#endif
#ifndef NS_QR3
#define NS_QR3 0
#endif
#ifndef NS_QR4
#define NS_QR4 0
#endif
#ifndef NS_QR5
#define NS_QR5 0
#endif
#ifndef NS_QR6
#define NS_QR6 0
#endif
#ifndef NS_QR7
#define NS_QR7 0
#endif

#define NS_TC_H_ROOT 0xFFFFFFFFu

/* The qdisc a packet is tied to. */
struct qdisc_id {
    u32 handle;
    u32 parent;
};

struct qdisc_drop_key {
    u64 location;
    struct qdisc_id q;
    u32 reason;
    u32 queued;   /* 1: the qdisc had accepted it (dropped after enqueue) */
};

struct qdisc_flow_key {
    struct qdisc_id q;
    struct ns_flow flow;
};

struct qdisc_drop_val {
    u64 count;
    s64 stack_id1;  /* a stack id + 1, taken when the key is first seen (0: none) */
};

BPF_STACK_TRACE(stacks, NS_STACK_ENTRIES);
BPF_PERCPU_HASH(drops, struct qdisc_drop_key, struct qdisc_drop_val, NS_MAX_KEYS);
BPF_PERCPU_HASH(flows, struct qdisc_flow_key, u64, NS_MAX_FLOWS);
/* [0] drops not counted by reason (key table full), [1] drops not counted by flow */
BPF_PERCPU_ARRAY(overflow, u64, 2);
/* skb address -> the qdisc that accepted it, until the driver gets it */
BPF_TABLE("lru_hash", u64, struct qdisc_id, accepted, NS_MAX_QUEUED);

static __always_inline int ns_qdisc_reason(u32 r)
{
    return r && (r == NS_QR0 || r == NS_QR1 || r == NS_QR2 || r == NS_QR3 ||
                 r == NS_QR4 || r == NS_QR5 || r == NS_QR6 || r == NS_QR7);
}

static __always_inline void ns_lost(int slot)
{
    u64 *lost = overflow.lookup(&slot);
    if (lost)
        __sync_fetch_and_add(lost, 1);
}

static __always_inline u32 ns_root_handle(void *dev)
{
    void *q = 0;
    u32 handle = 0;
    NS_READ(q, dev, NETDEV_QDISC);
    if (q)
        NS_READ(handle, q, QDISC_HANDLE);
    return handle;
}

static __always_inline int ns_on_drop(void *ctx, void *skb, u32 reason, u64 location)
{
    void *dev = ns_skb_dev(skb);
    if (!dev || !ns_dev_match(dev))
        return 0;
    u64 addr = (u64)skb;
    struct qdisc_drop_key key = {.location = location, .reason = reason};
    struct qdisc_id *q = accepted.lookup(&addr);
    if (q) {
        key.q = *q;
        key.queued = 1;
        accepted.delete(&addr);
    } else if (ns_qdisc_reason(reason)) {
        key.q.handle = ns_root_handle(dev);
        key.q.parent = NS_TC_H_ROOT;
    } else {
        return 0;  /* not a qdisc's drop (received on this device, dropped by the driver...) */
    }
    struct ns_pkt pkt = {};
    ns_skb_parse(skb, &pkt);
    if (!ns_flow_match(&pkt.flow))
        return 0;

    /* insert failed: another CPU added the key (count) or the table is full (lost) */
    struct qdisc_drop_val *v = drops.lookup(&key);
    if (v) {
        __sync_fetch_and_add(&v->count, 1);
    } else {
        /* the location names the free helper: its stack says who decided the drop */
        struct qdisc_drop_val init = {.count = 1, .stack_id1 = stacks.get_stackid(ctx, 0) + 1};
        if (drops.insert(&key, &init) != 0) {
            v = drops.lookup(&key);
            if (v)
                __sync_fetch_and_add(&v->count, 1);
            else
                ns_lost(0);
        }
    }
    u64 one = 1, *n;
    struct qdisc_flow_key fkey = {.q = key.q, .flow = pkt.flow};
    n = flows.lookup(&fkey);
    if (n) {
        __sync_fetch_and_add(n, 1);
    } else if (flows.insert(&fkey, &one) != 0) {
        n = flows.lookup(&fkey);
        if (n)
            __sync_fetch_and_add(n, 1);
        else
            ns_lost(1);
    }
    return 0;
}

#if NS_QDISC_ENQUEUE_TP
TRACEPOINT_PROBE(qdisc, qdisc_enqueue)
{
    if (NS_F_IFINDEX && args->ifindex != NS_F_IFINDEX)
        return 0;
    void *skb = args->skbaddr;
    if (!ns_dev_match(ns_skb_dev(skb)))
        return 0;
    u64 addr = (u64)skb;
    struct qdisc_id q = {.handle = args->handle, .parent = args->parent};
    accepted.update(&addr, &q);
    return 0;
}

/* net_dev_start_xmit(skb, dev): the driver has the packet; the qdisc no longer does. */
int ns_raw_start_xmit(struct bpf_raw_tracepoint_args *ctx)
{
    if (!ns_dev_match((void *)ctx->args[1]))
        return 0;
    u64 addr = ctx->args[0];
    accepted.delete(&addr);
    return 0;
}
#endif

NS_DEFINE_DROP_HOOK()
