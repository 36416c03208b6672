/* drop-summary: count dropped packets in the kernel by (drop location, flow,
 * device, reason).  The full stack and the device name are captured only the
 * first time a key is seen on a CPU: unwinding the stack on every drop costs
 * more than everything else together (measured: bench/).  With
 * NS_EXACT_STACKS the stack id is part of the key, as in the guide's tool.
 * Counts are per-CPU and cumulative: user space reads deltas, so nothing is
 * lost between a read and a clear. */
#include "netsleuth.h"

/* The device is its ifindex + struct net address (ns_dev_id): its namespace's inode
 * costs another read, taken once per key into the value. */
struct drop_key {
    u64 location;     /* 0 when grouping by flow only */
    u64 net;          /* the device's struct net */
    s32 stack_id;     /* only with NS_EXACT_STACKS, else -1 */
    u32 ifindex;
    u32 reason;
    struct ns_flow flow;
};

struct drop_val {
    u64 count;
    s64 stack_id1;    /* a representative stack id + 1 (0: none, as in other CPUs' zeroed slots) */
    u64 netns;        /* inode of the device's namespace (set with stack_id1, once per CPU) */
    char dev[16];
};

BPF_STACK_TRACE(stacks, NS_STACK_ENTRIES);
BPF_PERCPU_HASH(drops, struct drop_key, struct drop_val, NS_MAX_KEYS);
/* [0] drops not counted because the key table was full */
BPF_PERCPU_ARRAY(overflow, u64, 1);

static __always_inline int ns_on_drop(void *ctx, void *skb, u32 reason, u64 location)
{
    struct ns_pkt pkt = {};
    struct drop_key key = {};
    void *dev = ns_skb_dev(skb);

    if (!ns_dev_match(dev))
        return 0;
    ns_skb_parse(skb, &pkt);
    if (!ns_flow_match(&pkt.flow))
        return 0;

    ns_dev_id(dev, &key.ifindex, &key.net);
    key.reason = reason;
    key.stack_id = -1;
#if NS_GROUP_STACK
    key.location = location;
#if NS_EXACT_STACKS
    key.stack_id = stacks.get_stackid(ctx, 0);
#endif
#endif
#if NS_GROUP_FLOW
    key.flow = pkt.flow;
#endif

    struct drop_val *val = drops.lookup(&key);
    if (val) {
        __sync_fetch_and_add(&val->count, 1);
        return 0;
    }
    struct drop_val init = {.count = 1};
#if NS_GROUP_STACK
    init.stack_id1 = (NS_EXACT_STACKS ? key.stack_id : stacks.get_stackid(ctx, 0)) + 1;
#endif
    ns_dev_name(dev, init.dev);
    init.netns = ns_net_inum(key.net);
    /* NOEXIST: if another CPU inserted the key meanwhile, count into our slot of it. */
    if (drops.insert(&key, &init) != 0) {
        val = drops.lookup(&key);
        if (val) {
            __sync_fetch_and_add(&val->count, 1);
        } else {
            int idx = 0;
            u64 *lost = overflow.lookup(&idx);
            if (lost)
                __sync_fetch_and_add(lost, 1);
        }
    }
    return 0;
}

NS_DEFINE_DROP_HOOK()
#include "netsleuth_ovs_drop.inc.c"
