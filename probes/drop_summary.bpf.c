/* drop-summary: drops counted by (location, flow, device, reason), per-CPU and cumulative;
 * stacks once per key, sampled flow parsing under a flood: docs/bpf.md#drop_summarybpfc */
#include "netsleuth.h"

/* NS_SAMPLE_MODE: 0 every drop by flow, 1 sampled, 2 none (docs/bpf.md) */
#ifndef NS_SAMPLE_MODE
#define NS_SAMPLE_MODE 0
#endif

struct drop_key {
    u64 location;     /* 0 when grouping by flow only */
    u64 net;          /* the device's struct net */
    s32 stack_id;     /* only with NS_EXACT_STACKS, else -1; NS_GROUP_ONLY: not broken down by flow */
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

static __always_inline void ns_first_seen(void *ctx, void *dev, u64 net, s32 stack_id, struct drop_val *v)
{
#if NS_GROUP_STACK
    v->stack_id1 = (NS_EXACT_STACKS ? stack_id : stacks.get_stackid(ctx, 0)) + 1;
#endif
    ns_dev_name(dev, v->dev);
    v->netns = ns_net_inum(net);
}

static __always_inline void ns_count_lost(void)
{
    int idx = 0;
    u64 *lost = overflow.lookup(&idx);
    if (lost)
        __sync_fetch_and_add(lost, 1);
}

/* Count a drop under key; insert failed: another CPU inserted it (count) or the table is full. */
static __always_inline int ns_count_key(void *ctx, void *dev, struct drop_key *key)
{
    struct drop_val *val = drops.lookup(key);
    if (val) {
        __sync_fetch_and_add(&val->count, 1);
        return 0;
    }
    struct drop_val init = {.count = 1};
    ns_first_seen(ctx, dev, key->net, key->stack_id, &init);
    if (drops.insert(key, &init) != 0) {
        val = drops.lookup(key);
        if (val)
            __sync_fetch_and_add(&val->count, 1);
        else
            ns_count_lost();
    }
    return 0;
}

static __always_inline int ns_count_detail(void *ctx, void *skb, void *dev, u32 reason, u64 location)
{
    struct ns_pkt pkt = {};
    struct drop_key key = {};

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

    return ns_count_key(ctx, dev, &key);
}

#if NS_SAMPLE_MODE
/* A drop counted by its group only, in a direct-mapped per-CPU slot: docs/bpf.md#drop_summarybpfc */
struct group_key {
    u64 location;     /* 0 when grouping by flow only, as in drop_key */
    u64 net;
    u32 ifindex;
    u32 reason;
};

struct group_slot {
    struct group_key key;
    struct drop_val val;  /* count 0: the slot is free */
    u64 dev;          /* the device's address when key's ifindex and net were read */
    u64 gen;          /* dev_gen then */
};

BPF_PERCPU_ARRAY(group_slots, struct group_slot, NS_GROUP_SLOTS);

#if NS_DEV_GEN
/* [0] notifier runs so far (the netdev notifiers among them) */
BPF_ARRAY(dev_gen, u64, 1);

int ns_raw_notifier(struct bpf_raw_tracepoint_args *ctx)
{
    int zero = 0;
    u64 *gen = dev_gen.lookup(&zero);
    if (gen)
        __sync_fetch_and_add(gen, 1);
    return 0;
}
#endif

/* The device's address and dev_gen, for the next drop's shortcut (not with direct reads). */
static __always_inline void ns_slot_remember(struct group_slot *slot, void *dev, u64 gen)
{
#if !NS_DIRECT_READS
    slot->dev = (u64)dev;
    slot->gen = gen;
#endif
}

static __always_inline int ns_count_group(void *ctx, void *dev, u32 reason, u64 location)
{
    struct group_key key = {.reason = reason};
#if NS_GROUP_STACK
    key.location = location;
#endif
#if NS_DIRECT_READS
    /* plain loads: the device's identity itself, no need to know its address */
    ns_dev_id(dev, &key.ifindex, &key.net);
    u64 h = (key.location ^ (key.location >> 17) ^ ((u64)key.ifindex << 7) ^ reason) * 0x9E3779B97F4A7C15ULL;
#else
    u64 h = (key.location ^ (key.location >> 17) ^ ((u64)dev >> 6) ^ reason) * 0x9E3779B97F4A7C15ULL;
#endif
    u32 idx = (u32)(h >> 40) & (NS_GROUP_SLOTS - 1);
    struct group_slot *slot = group_slots.lookup(&idx);
    if (!slot)
        return 0;
    u64 gen = 0;
#if NS_DEV_GEN
    int zero = 0;
    u64 *g = dev_gen.lookup(&zero);
    if (g)
        gen = *g;
    /* no atomic: the slot is this CPU's and never nested (docs/bpf.md) */
    if (slot->val.count && slot->dev == (u64)dev && slot->gen == gen && g &&
        slot->key.location == key.location && slot->key.reason == reason) {
        slot->val.count++;
        return 0;
    }
#endif
#if !NS_DIRECT_READS
    ns_dev_id(dev, &key.ifindex, &key.net);
#endif
    if (slot->val.count && slot->key.location == key.location && slot->key.net == key.net &&
        slot->key.ifindex == key.ifindex && slot->key.reason == key.reason) {
        ns_slot_remember(slot, dev, gen);
        slot->val.count++;
        return 0;
    }
    if (!slot->val.count) {  /* free: take it; the count is written last (user space skips 0) */
        slot->key = key;
        ns_slot_remember(slot, dev, gen);
        ns_first_seen(ctx, dev, key.net, -1, &slot->val);
        slot->val.count = 1;
        return 0;
    }
    /* The slot is another group's: count in drops, under a key marked as group-only. */
    struct drop_key spill = {.location = key.location, .net = key.net, .stack_id = NS_GROUP_ONLY,
                             .ifindex = key.ifindex, .reason = reason};
    return ns_count_key(ctx, dev, &spill);
}

#if NS_SAMPLE_MODE == 1
struct sample_state {
    u64 window_end;   /* when the current second ends (jiffies, or ns without them) */
    u64 detailed;     /* drops broken down in it */
    u64 seq;          /* drops past the budget, for one in NS_DETAIL_ONE_IN */
};
BPF_PERCPU_ARRAY(sample_state, struct sample_state, 1);

/* By flow: a CPU's first NS_DETAIL_PER_SECOND drops a second, then 1 in NS_DETAIL_ONE_IN. */
static __always_inline int ns_take_detail(void)
{
    int zero = 0;
    struct sample_state *s = sample_state.lookup(&zero);
    if (!s)
        return 1;
#if NS_HAVE_JIFFIES64
    u64 now = bpf_jiffies64(), second = NS_HZ;  /* a variable read, where the clock is a clock read */
#else
    u64 now = bpf_ktime_get_ns(), second = 1000000000ULL;
#endif
    if (now >= s->window_end) {
        s->window_end = now + second;
        s->detailed = 0;
    }
    if (s->detailed < NS_DETAIL_PER_SECOND) {
        s->detailed++;
        return 1;
    }
    return (++s->seq & (NS_DETAIL_ONE_IN - 1)) == 0;
}
#else
static __always_inline int ns_take_detail(void) { return 0; }
#endif
#endif /* NS_SAMPLE_MODE */

static __always_inline int ns_on_drop(void *ctx, void *skb, u32 reason, u64 location)
{
    void *dev = ns_skb_dev(skb);

    if (!ns_dev_match(dev))
        return 0;
#if NS_SAMPLE_MODE
    /* The OVS consume kprobe can interrupt this program on its CPU: it never takes a slot. */
    if (reason != NS_REASON_OVS_DROP_ACTION && !ns_take_detail())
        return ns_count_group(ctx, dev, reason, location);
#endif
    return ns_count_detail(ctx, skb, dev, reason, location);
}

NS_DEFINE_DROP_HOOK()
#include "netsleuth_ovs_drop.inc.c"
