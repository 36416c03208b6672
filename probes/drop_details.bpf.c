/* drop-details (guide tool 2, eth_drop): one event per dropped packet, after
 * the filters ran in the kernel. */
#include "netsleuth.h"

struct drop_event {
    u64 ts_ns;
    u64 location;
    u32 pid;
    u32 tgid;
    u32 cpu;
    u32 reason;
    s32 stack_id;
    u32 ifindex;
    u32 netns;
    u32 skb_len;
    char comm[16];
    char dev[16];
    struct ns_pkt pkt;
};

#include "netsleuth_events.inc.c"
BPF_STACK_TRACE(stacks, NS_STACK_ENTRIES);
BPF_PERCPU_ARRAY(scratch, struct drop_event, 1);  /* too big for the 512-byte stack */

static __always_inline int ns_on_drop(void *ctx, void *skb, u32 reason, u64 location)
{
    int zero = 0;
    struct drop_event *e = scratch.lookup(&zero);
    void *dev = ns_skb_dev(skb);

    if (!e || !ns_dev_match(dev))
        return 0;
    __builtin_memset(e, 0, sizeof(*e));
    ns_skb_parse(skb, &e->pkt);
    if (!ns_flow_match(&e->pkt.flow))
        return 0;
    if (NS_F_ETHTYPE && e->pkt.eth_type != NS_F_ETHTYPE)
        return 0;
    if (NS_F_VLAN >= 0 && (!e->pkt.has_vlan || e->pkt.vlan_id != NS_F_VLAN))
        return 0;

    u64 id = bpf_get_current_pid_tgid();
    e->ts_ns = bpf_ktime_get_ns();
    e->location = location;
    e->pid = (u32)id;
    e->tgid = id >> 32;
    e->cpu = bpf_get_smp_processor_id();
    e->reason = reason;
    e->ifindex = ns_dev_ifindex(dev);
    e->netns = ns_dev_netns(dev);
    NS_READ(e->skb_len, skb, SKB_LEN);
    bpf_get_current_comm(e->comm, sizeof(e->comm));
    ns_dev_name(dev, e->dev);
    e->stack_id = NS_WANT_STACK ? stacks.get_stackid(ctx, 0) : -1;
    ns_emit(ctx, e, sizeof(*e));
    return 0;
}

NS_DEFINE_DROP_HOOK()
#include "netsleuth_ovs_drop.inc.c"
