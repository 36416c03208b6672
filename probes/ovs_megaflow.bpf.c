/* ovs-megaflow: the megaflow lifecycle.  Upcalls (the kernel missed: packet
 * headers, filtered in the kernel), FLOW_CMD_NEW and FLOW_CMD_DEL (the netlink
 * request from ovs-vswitchd, copied raw and decoded in user space). */
#include "netsleuth.h"

#define EV_UPCALL 1
#define EV_FLOW_NEW 2
#define EV_FLOW_DEL 3
#define NL_COPY 1024

struct mf_event {
    u64 ts_ns;
    u32 kind;
    u32 tid;
    u32 nl_len;
    char comm[16];
    struct ns_pkt pkt;
    u8 nl[NL_COPY];
};

#include "netsleuth_events.inc.c"
BPF_PERCPU_ARRAY(scratch, struct mf_event, 1);

static __always_inline struct mf_event *new_event(u32 kind)
{
    int zero = 0;
    struct mf_event *e = scratch.lookup(&zero);
    if (!e)
        return 0;
    e->ts_ns = bpf_ktime_get_ns();
    e->kind = kind;
    e->tid = bpf_get_current_pid_tgid();
    e->nl_len = 0;
    bpf_get_current_comm(e->comm, sizeof(e->comm));
    return e;
}

int on_upcall(struct pt_regs *ctx)
{
    void *skb = (void *)ns_kprobe_arg(ctx, 2);
    struct mf_event *e = new_event(EV_UPCALL);
    if (!e || !skb)
        return 0;
    __builtin_memset(&e->pkt, 0, sizeof(e->pkt));
    ns_skb_parse(skb, &e->pkt);
    if (!ns_flow_match(&e->pkt.flow))
        return 0;
    /* Only the header part of the event: the netlink buffer is unused. */
    ns_emit(ctx, e, sizeof(*e) - NL_COPY);
    return 0;
}

/* skb is the netlink request: its data is nlmsghdr + genlmsghdr + ovs_header + attributes. */
static __always_inline int on_flow_cmd(struct pt_regs *ctx, u32 kind)
{
    void *skb = (void *)ns_kprobe_arg(ctx, 1);
    struct mf_event *e = new_event(kind);
    if (!e || !skb)
        return 0;
    unsigned char *data = 0;
    NS_READ(data, skb, SKB_DATA);
    NS_READ(e->nl_len, skb, SKB_LEN);
    bpf_probe_read_kernel(e->nl, NL_COPY, data);
    ns_emit(ctx, e, sizeof(*e));
    return 0;
}

int on_flow_new(struct pt_regs *ctx) { return on_flow_cmd(ctx, EV_FLOW_NEW); }
int on_flow_del(struct pt_regs *ctx) { return on_flow_cmd(ctx, EV_FLOW_DEL); }
