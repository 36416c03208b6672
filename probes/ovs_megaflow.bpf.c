/* ovs-megaflow: upcalls, flow installs and deletes, executes; filtered here, on the packets
 * and on the request's flow key (its netlink attributes walked): docs/bpf.md#ovs_megaflowbpfc */
#include "netsleuth.h"

#define EV_UPCALL 1
#define EV_FLOW_NEW 2
#define EV_FLOW_DEL 3
#define EV_EXECUTE 4
#define NL_COPY 1024
#define NL_SLACK 16   /* the walk reads up to 12 bytes past an offset it masked into the copy */
#define NL_HDR 24     /* nlmsghdr + genlmsghdr + ovs_header */
#define NLA_TYPE_MASK 0x3fff
#define OVS_FLOW_ATTR_KEY 1
#define OVS_KEY_ATTR_ENCAP 1      /* a VLAN frame's inner keys, last in the key */
#define OVS_KEY_ATTR_ETHERNET 4
#define OVS_KEY_ATTR_IPV4 7
#define OVS_KEY_ATTR_TCP 9
#define OVS_KEY_ATTR_UDP 10
#define OVS_KEY_ATTR_SCTP 17
#define TOP_ATTRS 6   /* UFID, UFID flags, then the key: ovs-vswitchd puts it early */
#define KEY_ATTRS 24  /* more than a key has before its L4 attribute */

#ifndef NS_F_ETH_SRC
#define NS_F_ETH_SRC 0
#endif
#ifndef NS_F_ETH_DST
#define NS_F_ETH_DST 0
#endif
#define MF_F_ETH (NS_F_ETH_SRC || NS_F_ETH_DST)
#define MF_F_IP (NS_F_SADDR || NS_F_DADDR || NS_F_PROTO)
#define MF_F_L4 (NS_F_SPORT || NS_F_DPORT)

struct mf_event {
    u64 ts_ns;
    u32 kind;
    u32 tid;
    u32 nl_len;
    char comm[16];
    struct ns_pkt pkt;
    u8 nl[NL_COPY + NL_SLACK];
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

/* A MAC address (6 bytes, wire order) as the 48-bit number the filters are given as. */
static __always_inline u64 mf_mac(u8 *b)
{
    return ((u64)b[0] << 40) | ((u64)b[1] << 32) | ((u64)b[2] << 24) | ((u64)b[3] << 16) |
           ((u64)b[4] << 8) | b[5];
}

static __always_inline int mf_macs_match(u8 *src, u8 *dst)
{
    return (!NS_F_ETH_SRC || mf_mac(src) == NS_F_ETH_SRC) && (!NS_F_ETH_DST || mf_mac(dst) == NS_F_ETH_DST);
}

/* A packet event (upcall, execute): its headers, when they pass the filters. */
static __always_inline int on_packet(void *ctx, void *skb, u32 kind)
{
    struct mf_event *e = new_event(kind);
    if (!e || !skb)
        return 0;
    __builtin_memset(&e->pkt, 0, sizeof(e->pkt));
    ns_skb_parse(skb, &e->pkt);
    if (!ns_flow_match(&e->pkt.flow) || !mf_macs_match(e->pkt.eth_src, e->pkt.eth_dst))
        return 0;
    /* Only the header part of the event: the netlink buffer is unused. */
    ns_emit(ctx, e, sizeof(*e) - NL_COPY - NL_SLACK);
    return 0;
}

/* ovs_dp_upcall(dp, skb, key, upcall_info, cutlen) */
NS_ENTRY_HOOK_CTX(on_upcall, 2, on_packet, EV_UPCALL)

/* ovs_flow_key_extract_userspace(net, attr, skb, key, log): OVS_PACKET_CMD_EXECUTE only */
NS_ENTRY_HOOK_CTX(on_execute, 3, on_packet, EV_EXECUTE)

/* Bytes of the copied message, at an offset masked into the copy (the slack covers +12). */
static __always_inline u8 *mf_at(struct mf_event *e, u32 off)
{
    return e->nl + (off & (NL_COPY - 1));
}

static __always_inline u32 mf_u16le(u8 *p) { return p[0] | ((u32)p[1] << 8); }
static __always_inline u32 mf_u16be(u8 *p) { return ((u32)p[0] << 8) | p[1]; }
static __always_inline u32 mf_u32raw(u8 *p)  /* as the packet's field reads on this (little-endian) CPU */
{
    return p[0] | ((u32)p[1] << 8) | ((u32)p[2] << 16) | ((u32)p[3] << 24);
}

#if MF_F_ETH || MF_F_IP || MF_F_L4
/* Where each key attribute starts in the copy, by type (0: absent); a map: docs/bpf.md */
struct mf_walk {
    u16 at[64];
};
BPF_PERCPU_ARRAY(walk, struct mf_walk, 1);

/* The attribute at offset off (in the copy), when it is at least min_len long: its payload. */
static __always_inline u8 *mf_attr(struct mf_event *e, u32 off, u32 min_len)
{
    if (!off)
        return 0;
    u8 *a = mf_at(e, off);
    return mf_u16le(a) >= min_len ? mf_at(e, off + 4) : 0;
}
#endif

/* Does the request's flow key pass the filters?  Loops only break, never branch: docs/bpf.md */
static __always_inline int mf_key_match(struct mf_event *e)
{
#if MF_F_ETH || MF_F_IP || MF_F_L4
    int zero = 0;
    struct mf_walk *w = walk.lookup(&zero);
    if (!w)
        return 1;
    __builtin_memset(w, 0, sizeof(*w));
    u32 end = e->nl_len < NL_COPY ? e->nl_len : NL_COPY;
    u32 off = NL_HDR;
#pragma unroll TOP_ATTRS
    for (int i = 0; i < TOP_ATTRS; i++) {
        if (off + 4 > end)
            break;
        u8 *a = mf_at(e, off);
        u32 len = mf_u16le(a), type = mf_u16le(a + 2) & NLA_TYPE_MASK;
        if (len < 4 || type == OVS_FLOW_ATTR_KEY)
            break;
        off += (len + 3) & ~3u;
    }
    if (off + 4 > end || (mf_u16le(mf_at(e, off + 2)) & NLA_TYPE_MASK) != OVS_FLOW_ATTR_KEY)
        return 1;
    u32 key_len = mf_u16le(mf_at(e, off));
    u32 key_end = off + key_len < end ? off + key_len : end;
    off += 4;
    /* a counted unroll: clang 14 leaves a bare one rolled (docs/bpf.md#ovs_megaflowbpfc) */
#pragma unroll KEY_ATTRS
    for (int i = 0; i < KEY_ATTRS; i++) {
        if (off + 4 > key_end)
            break;
        u8 *a = mf_at(e, off);
        u32 len = mf_u16le(a), type = mf_u16le(a + 2) & NLA_TYPE_MASK;
        if (len < 4)
            break;
        w->at[type & 63] = off;  /* key attribute types are < 64 */
        /* into an encap (a VLAN frame's inner keys, last in the key), past anything else */
        u32 encap = ((type ^ OVS_KEY_ATTR_ENCAP) - 1) >> 31;  /* 1 when type is ENCAP */
        u32 step = (len + 3) & ~3u;
        off += step - encap * (step - 4);
    }
    u8 *eth = mf_attr(e, w->at[OVS_KEY_ATTR_ETHERNET], 16);    /* src[6], dst[6] */
    u8 *ip = mf_attr(e, w->at[OVS_KEY_ATTR_IPV4], 16);         /* src, dst, proto, ... */
    u8 *l4 = mf_attr(e, w->at[OVS_KEY_ATTR_TCP], 8);           /* src port, dst port */
    if (!l4)
        l4 = mf_attr(e, w->at[OVS_KEY_ATTR_UDP], 8);
    if (!l4)
        l4 = mf_attr(e, w->at[OVS_KEY_ATTR_SCTP], 8);
    if (MF_F_ETH && (!eth || !mf_macs_match(eth, eth + 6)))
        return 0;
    if (MF_F_IP && (!ip || (NS_F_SADDR && mf_u32raw(ip) != NS_F_SADDR) ||
                    (NS_F_DADDR && mf_u32raw(ip + 4) != NS_F_DADDR) || (NS_F_PROTO && ip[8] != NS_F_PROTO)))
        return 0;
    if (MF_F_L4 && (!l4 || (NS_F_SPORT && mf_u16be(l4) != NS_F_SPORT) || (NS_F_DPORT && mf_u16be(l4 + 2) != NS_F_DPORT)))
        return 0;
    return 1;
#else
    return 1;
#endif
}

/* skb is the netlink request: its data is nlmsghdr + genlmsghdr + ovs_header + attributes. */
static __always_inline int on_flow_cmd(void *ctx, void *skb, u32 kind)
{
    struct mf_event *e = new_event(kind);
    if (!e || !skb)
        return 0;
    unsigned char *data = 0;
    NS_READ(data, skb, SKB_DATA);
    NS_READ(e->nl_len, skb, SKB_LEN);
    bpf_probe_read_kernel(e->nl, NL_COPY, data);
    if (!mf_key_match(e))
        return 0;
    ns_emit(ctx, e, sizeof(*e) - NL_SLACK);
    return 0;
}

/* ovs_flow_cmd_new/del(skb, info) */
NS_ENTRY_HOOK_CTX(on_flow_new, 1, on_flow_cmd, EV_FLOW_NEW)
NS_ENTRY_HOOK_CTX(on_flow_del, 1, on_flow_cmd, EV_FLOW_DEL)
