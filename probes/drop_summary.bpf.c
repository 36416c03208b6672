/* drop-summary: count dropped packets in the kernel by (stack, flow, device, reason).
 * Counts are per-CPU (exact, no lost increments) and cumulative: user space
 * reads deltas, so nothing is lost between a read and a clear. */
#include "netsleuth.h"

struct drop_key {
    s32 stack_id;     /* -1 when grouping by flow only or when the stack was lost */
    u32 ifindex;
    u32 netns;
    u32 reason;
    u64 location;
    struct ns_flow flow;
    char dev[16];
};

BPF_STACK_TRACE(stacks, NS_STACK_ENTRIES);
BPF_PERCPU_HASH(drops, struct drop_key, u64, NS_MAX_KEYS);
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

    key.ifindex = ns_dev_ifindex(dev);
    key.netns = ns_dev_netns(dev);
    key.reason = reason;
    ns_dev_name(dev, key.dev);
    key.stack_id = -1;
#if NS_GROUP_STACK
    key.stack_id = stacks.get_stackid(ctx, 0);
    key.location = location;
#endif
#if NS_GROUP_FLOW
    key.flow = pkt.flow;
#endif

    u64 zero = 0, *count = drops.lookup_or_try_init(&key, &zero);
    if (count) {
        __sync_fetch_and_add(count, 1);
    } else {
        int idx = 0;
        u64 *lost = overflow.lookup(&idx);
        if (lost)
            __sync_fetch_and_add(lost, 1);
    }
    return 0;
}

NS_DEFINE_DROP_HOOK()
