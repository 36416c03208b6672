/* Shared helpers of the BPF programs; kernel fields by BTF offset (NS_OFF_*): docs/bpf.md#netsleuthh */
#ifndef NETSLEUTH_H
#define NETSLEUTH_H

#ifndef __always_inline
#define __always_inline inline __attribute__((always_inline))
#endif

#include <uapi/linux/ptrace.h>  /* struct pt_regs for kprobe programs */

#ifdef NS_KERNEL_HEADERS
#include <linux/skbuff.h>
#include <linux/netdevice.h>
#endif

/* Filter constants: 0 (or -1 for VLAN) means "no filter". */
#ifndef NS_DIRECT_READS  /* struct fields by plain loads (set by the loader, see below) */
#define NS_DIRECT_READS 0
#endif
#ifndef NS_F_SADDR
#define NS_F_SADDR 0
#endif
#ifndef NS_F_DADDR
#define NS_F_DADDR 0
#endif
#ifndef NS_F_SPORT
#define NS_F_SPORT 0
#endif
#ifndef NS_F_DPORT
#define NS_F_DPORT 0
#endif
#ifndef NS_F_PROTO
#define NS_F_PROTO 0
#endif
#ifndef NS_F_IFINDEX
#define NS_F_IFINDEX 0
#endif
#ifndef NS_F_NETNS
#define NS_F_NETNS 0
#endif
#ifndef NS_F_ETHTYPE
#define NS_F_ETHTYPE 0
#endif
#ifndef NS_F_VLAN
#define NS_F_VLAN -1
#endif

#define NS_READ(dst, base, field) \
    bpf_probe_read_kernel(&(dst), sizeof(dst), (char *)(base) + NS_OFF_##field)

#if NS_DIRECT_READS
/* A plain load of a struct field (bpf_rdonly_cast, 6.2+): no helper call. The loader turns
 * the stand-in's calls into the kfunc's (probes/runtime/direct_reads.py, docs/bpf.md#direct-reads). */
static void *(*ns_rdonly_cast)(void *obj, u32 btf_id) = (void *)NS_RDONLY_CAST_STANDIN;
#define NS_DIRECT(type, base, STRUCT, field) \
    (*(type *)((char *)ns_rdonly_cast((void *)(base), NS_BTF_##STRUCT) + NS_OFF_##field))
#endif

#define NS_ETH_P_IP 0x0800
#define NS_ETH_P_8021Q 0x8100
#define NS_ETH_P_8021AD 0x88A8
#define NS_MAC_UNSET 0xffff

struct ns_iphdr {
    u8 ver_ihl;
    u8 tos;
    u16 tot_len;
    u16 id;
    u16 frag_off;
    u8 ttl;
    u8 protocol;
    u16 check;
    u32 saddr;
    u32 daddr;
};

struct ns_l4 {
    u16 sport;
    u16 dport;
    u32 seq;        /* TCP sequence; ICMP: id << 16 | seq */
    u32 ack;
    u8 doff_rsvd;   /* TCP data offset in the high nibble */
    u8 flags;       /* TCP flags */
};

/* The 5-tuple, ports/addresses in network byte order as they sit in the packet. */
struct ns_flow {
    u32 saddr;
    u32 daddr;
    u16 sport;
    u16 dport;
    u8 proto;
    u8 pad[3];
};

/* Everything the drop probes read from a packet. */
struct ns_pkt {
    struct ns_flow flow;
    u8 eth_src[6];
    u8 eth_dst[6];
    u16 eth_type;      /* host order; 0 when no Ethernet header is known */
    u16 vlan_id;
    u8 has_vlan;
    u8 has_ip;
    u8 ttl;
    u8 tcp_flags;
    u16 ip_len;        /* host order */
    u16 ip_id;         /* host order */
    u32 tcp_seq;       /* host order */
    u16 payload_len;   /* L4 payload bytes */
    u8 icmp_type;
    u8 icmp_code;
    u16 icmp_id;       /* host order */
    u16 icmp_seq;      /* host order */
};

/* floor(log2(v)), 0 for v <= 1; by hand: LLVM 14 crashes on ctlz (docs/bpf.md) */
static __always_inline u8 ns_log2(u64 v)
{
    u8 r = 0;
    if (v >> 32) { v >>= 32; r += 32; }
    if (v >> 16) { v >>= 16; r += 16; }
    if (v >> 8) { v >>= 8; r += 8; }
    if (v >> 4) { v >>= 4; r += 4; }
    if (v >> 2) { v >>= 2; r += 2; }
    if (v >> 1) { r += 1; }
    return r;
}

static __always_inline u16 ns_ntohs(u16 x) { return __builtin_bswap16(x); }
static __always_inline u32 ns_ntohl(u32 x) { return __builtin_bswap32(x); }

/* Packet and device helpers: a program without sk_buff offsets defines NS_NO_PACKET_HELPERS. */
#ifndef NS_NO_PACKET_HELPERS
static __always_inline void *ns_skb_dev(void *skb)
{
#if NS_DIRECT_READS
    return NS_DIRECT(void *, skb, SK_BUFF, SKB_DEV);
#else
    void *dev = 0;
    NS_READ(dev, skb, SKB_DEV);
    return dev;
#endif
}

static __always_inline u32 ns_dev_ifindex(void *dev)
{
    int ifindex = 0;
    if (dev)
        NS_READ(ifindex, dev, NETDEV_IFINDEX);
    return ifindex;
}

static __always_inline void ns_dev_name(void *dev, char *name /* [16] */)
{
    if (dev)
        bpf_probe_read_kernel(name, 16, (char *)dev + NS_OFF_NETDEV_NAME);
}

/* ifindex + struct net address: a device in any namespace (docs/bpf.md), one read in NS_DEV_WIN. */
static __always_inline void ns_dev_id(void *dev, u32 *ifindex, u64 *net)
{
    *ifindex = 0;
    *net = 0;
    if (!dev)
        return;
#if NS_DIRECT_READS
    *ifindex = NS_DIRECT(u32, dev, NET_DEVICE, NETDEV_IFINDEX);
    *net = NS_DIRECT(u64, dev, NET_DEVICE, NETDEV_ND_NET);
#elif defined(NS_DEV_WIN_START)
    u64 win[NS_DEV_WIN_LEN / 8] = {};
    bpf_probe_read_kernel(win, sizeof(win), (char *)dev + NS_DEV_WIN_START);
    *ifindex = *(u32 *)((char *)win + NS_OFF_NETDEV_IFINDEX - NS_DEV_WIN_START);
    *net = *(u64 *)((char *)win + NS_OFF_NETDEV_ND_NET - NS_DEV_WIN_START);
#else
    NS_READ(*ifindex, dev, NETDEV_IFINDEX);
    NS_READ(*net, dev, NETDEV_ND_NET);
#endif
}

/* Inode number of a network namespace, from its struct net (0 when unknown). */
static __always_inline u32 ns_net_inum(u64 net)
{
    u32 inum = 0;
    if (net)
        NS_READ(inum, (void *)net, NET_NS_INUM);
    return inum;
}

/* Inode number of the device's network namespace (0 when unknown). */
static __always_inline u32 ns_dev_netns(void *dev)
{
    u32 ifindex;
    u64 net;
    ns_dev_id(dev, &ifindex, &net);
    return ns_net_inum(net);
}

/* Is dev the device (ifindex, netns inode) given?  ifindex 0: any (of netns when not 0). */
static __always_inline int ns_dev_is(void *dev, u32 ifindex, u32 netns)
{
    if (ifindex == 0)
        return netns == 0 || ns_dev_netns(dev) == netns;
    if (ns_dev_ifindex(dev) != ifindex)
        return 0;
    return netns == 0 || ns_dev_netns(dev) == netns;
}

static __always_inline int ns_dev_match(void *dev)
{
    return ns_dev_is(dev, NS_F_IFINDEX, NS_F_NETNS);
}

/* Parse an Ethernet header (h: 18 bytes read); the L3 offset: 14, or 18 past a VLAN tag. */
static __always_inline u32 ns_eth_from(u8 *h, struct ns_pkt *p)
{
    __builtin_memcpy(p->eth_dst, h, 6);
    __builtin_memcpy(p->eth_src, h + 6, 6);
    u16 type = ((u16)h[12] << 8) | h[13];
    if (type == NS_ETH_P_8021Q || type == NS_ETH_P_8021AD) {
        p->has_vlan = 1;
        p->vlan_id = (((u16)h[14] << 8) | h[15]) & 0x0fff;
        p->eth_type = ((u16)h[16] << 8) | h[17];
        return 18;
    }
    p->eth_type = type;
    return 14;
}

static __always_inline unsigned char *ns_parse_eth(unsigned char *mac, struct ns_pkt *p)
{
    u8 h[18] = {};  /* dst, src, type, and a VLAN tag's TCI + inner type */
    bpf_probe_read_kernel(h, sizeof(h), mac);
    return mac + ns_eth_from(h, p);
}

static __always_inline int ns_ip_ok(struct ns_iphdr *iph)
{
    return (iph->ver_ihl >> 4) == 4 && (iph->ver_ihl & 0x0f) >= 5;
}

static __always_inline int ns_read_ip(unsigned char *ip, struct ns_iphdr *iph)
{
    bpf_probe_read_kernel(iph, sizeof(*iph), ip);
    return ns_ip_ok(iph);
}

/* An IPv4 header with a correct checksum (options too: 60 bytes read at once; docs/bpf.md). */
static __always_inline int ns_read_ip_verified(unsigned char *ip, struct ns_iphdr *iph)
{
    u16 w[30] = {};
    if (bpf_probe_read_kernel(w, sizeof(w), ip))
        return 0;
    __builtin_memcpy(iph, w, sizeof(*iph));
    if (!ns_ip_ok(iph))
        return 0;
    u32 words = (iph->ver_ihl & 0x0f) * 2, sum = 0;
#pragma unroll
    for (int i = 0; i < 30; i++) {
        if (i < words)
            sum += w[i];
    }
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    return sum == 0xffff;  /* ones' complement sum of a correct header: byte order does not matter */
}

/* Ethernet + IPv4 + L4 and UDP's or ICMP's first payload bytes in one read:
 * docs/bpf.md#parsing-a-packet-ns_skb_parse */
#define NS_BURST_PAYLOAD (14 + 20 + 8)
#define NS_BURST_LEN 80  /* NS_BURST_PAYLOAD + NS_DISC_BYTES, rounded up */

/* What the parse read besides the headers, for ns_pkt_identity. */
struct ns_skb_view {
    unsigned char *data;
    u32 len;             /* skb->len and ->data_len: set with NS_SKB_WIN_LENS only */
    u32 data_len;
    u8 payload_in_burst; /* untagged, no IP options, UDP or ICMP: payload at NS_BURST_PAYLOAD */
    u8 burst[NS_BURST_LEN];
};

/* Fill p from the skb (Ethernet, IPv4, L4, else from skb->data); the IPv4 header's address or 0. */
static __always_inline unsigned char *ns_skb_parse_view(void *skb, struct ns_pkt *p, struct ns_skb_view *v)
{
    unsigned char *head = 0, *data = 0, *ip = 0;
    u16 nh = 0, mh = NS_MAC_UNSET, proto = 0, tci = 0;

#ifdef NS_SKB_WIN_START
    /* one read instead of six (the window: offsets.py) */
    u64 win[NS_SKB_WIN_LEN / 8] = {};
    bpf_probe_read_kernel(win, sizeof(win), (char *)skb + NS_SKB_WIN_START);
#define NS_WIN(type, FIELD) (*(type *)((char *)win + NS_OFF_##FIELD - NS_SKB_WIN_START))
    head = NS_WIN(unsigned char *, SKB_HEAD);
    data = NS_WIN(unsigned char *, SKB_DATA);
    nh = NS_WIN(u16, SKB_NETWORK_HEADER);
    mh = NS_WIN(u16, SKB_MAC_HEADER);
    proto = NS_WIN(u16, SKB_PROTOCOL);
    tci = NS_WIN(u16, SKB_VLAN_TCI);
#ifdef NS_SKB_WIN_LENS
    v->len = NS_WIN(u32, SKB_LEN);
    v->data_len = NS_WIN(u32, SKB_DATA_LEN);
#endif
#undef NS_WIN
#else
    NS_READ(head, skb, SKB_HEAD);
    NS_READ(data, skb, SKB_DATA);
    NS_READ(nh, skb, SKB_NETWORK_HEADER);
    NS_READ(mh, skb, SKB_MAC_HEADER);
    NS_READ(proto, skb, SKB_PROTOCOL);
    NS_READ(tci, skb, SKB_VLAN_TCI);
#endif
    v->data = data;
    if (!head)
        return 0;

    struct ns_iphdr iph = {};
    struct ns_l4 l4 = {};
    int have_l4 = 0;
    /* a MAC header at the network header is none (L3 device: docs/bpf.md) */
    if (mh != NS_MAC_UNSET && mh != nh) {
        u8 *b = v->burst;
        if (bpf_probe_read_kernel(b, NS_BURST_LEN, head + mh) == 0) {
            u32 l3off = ns_eth_from(b, p);
            if (p->eth_type == NS_ETH_P_IP && l3off == 14) {
                __builtin_memcpy(&iph, b + 14, sizeof(iph));
                __builtin_memcpy(&l4, b + 34, sizeof(l4));
            } else if (p->eth_type == NS_ETH_P_IP) {  /* VLAN-tagged: the IP header moved */
                ns_read_ip(head + mh + l3off, &iph);
            }
            if (p->eth_type == NS_ETH_P_IP && ns_ip_ok(&iph)) {
                ip = head + mh + l3off;
                /* the burst's L4 bytes are the packet's only without IP options */
                have_l4 = l3off == 14 && (iph.ver_ihl & 0x0f) == 5;
            }
        }
    }
    if (!p->eth_type && proto)
        p->eth_type = ns_ntohs(proto);
    if (!p->has_vlan && tci) {  /* tag stripped into the skb by the NIC / stack */
        p->has_vlan = 1;
        p->vlan_id = tci & 0x0fff;
    }
    if (!ip && nh != NS_MAC_UNSET && nh != 0 && ns_read_ip(head + nh, &iph))
        ip = head + nh;
    if (!ip && data) {
        /* no offsets to trust: IP or Ethernet, told by the IP checksum (docs/bpf.md) */
        if (ns_read_ip_verified(data, &iph)) {
            ip = data;
        } else if (mh == NS_MAC_UNSET) {
            unsigned char *l3 = ns_parse_eth(data, p);
            if (p->eth_type == NS_ETH_P_IP && ns_read_ip_verified(l3, &iph))
                ip = l3;
        }
    }
    if (!ip)
        return 0;

    if (!p->eth_type)
        p->eth_type = NS_ETH_P_IP;
    p->has_ip = 1;
    p->flow.saddr = iph.saddr;
    p->flow.daddr = iph.daddr;
    p->flow.proto = iph.protocol;
    p->ttl = iph.ttl;
    p->ip_len = ns_ntohs(iph.tot_len);
    p->ip_id = ns_ntohs(iph.id);

    u32 ihl = (iph.ver_ihl & 0x0f) * 4;
    if (ns_ntohs(iph.frag_off) & 0x1fff)
        return ip;  /* a later fragment carries no L4 header */
    if (!have_l4)
        bpf_probe_read_kernel(&l4, sizeof(l4), ip + ihl);
    u32 l4hdr = 0;
    if (iph.protocol == 6) {
        p->flow.sport = l4.sport;
        p->flow.dport = l4.dport;
        p->tcp_seq = ns_ntohl(l4.seq);
        p->tcp_flags = l4.flags;
        l4hdr = (l4.doff_rsvd >> 4) * 4;
    } else if (iph.protocol == 17) {
        p->flow.sport = l4.sport;
        p->flow.dport = l4.dport;
        l4hdr = 8;
    } else if (iph.protocol == 1) {
        u8 *b = (u8 *)&l4;
        p->icmp_type = b[0];
        p->icmp_code = b[1];
        p->icmp_id = ((u16)b[4] << 8) | b[5];
        p->icmp_seq = ((u16)b[6] << 8) | b[7];
        l4hdr = 8;
    }
    if (p->ip_len > ihl + l4hdr)
        p->payload_len = p->ip_len - ihl - l4hdr;
    v->payload_in_burst = have_l4 && l4hdr == 8;
    return ip;
}

static __always_inline unsigned char *ns_skb_parse(void *skb, struct ns_pkt *p)
{
    struct ns_skb_view v = {};
    return ns_skb_parse_view(skb, p, &v);
}
#endif  /* NS_NO_PACKET_HELPERS */

/* The 5-tuple filters, compared against constants in the kernel. */
static __always_inline int ns_flow_match(struct ns_flow *f)
{
    if (NS_F_PROTO && f->proto != NS_F_PROTO)
        return 0;
    if (NS_F_SADDR && f->saddr != NS_F_SADDR)
        return 0;
    if (NS_F_DADDR && f->daddr != NS_F_DADDR)
        return 0;
    if (NS_F_SPORT && ns_ntohs(f->sport) != NS_F_SPORT)
        return 0;
    if (NS_F_DPORT && ns_ntohs(f->dport) != NS_F_DPORT)
        return 0;
    return 1;
}


/* A packet's identity across skb copies, from its content: docs/bpf.md#a-packets-identity-across-skb-copies-ns_pkt_identity */
#if defined(NS_OFF_SKB_LEN) && defined(NS_OFF_SKB_DATA_LEN)  /* only programs that read the lengths */
#define NS_DISC_BYTES 32
_Static_assert(NS_BURST_PAYLOAD + NS_DISC_BYTES <= NS_BURST_LEN, "the burst holds the payload's hashed bytes");

struct ns_pkt_id {
    u32 saddr;
    u32 daddr;
    u32 disc;       /* TCP: sequence number; others: payload hash (0: none) */
    u16 ip_id;
    u16 sport;      /* ICMP: id */
    u16 dport;      /* ICMP: seq */
    u8 proto;
    u8 pad;
};

static __always_inline u32 ns_payload_hash(u8 *b, u32 n)
{
    u32 h = 2166136261u;
#pragma unroll
    for (int i = 0; i < NS_DISC_BYTES; i++) {
        if (i < n) {
            h ^= b[i];
            h *= 16777619u;
        }
    }
    return h ? h : 1;
}

/* The packet's identity, IP length, skb->len; 0: not IPv4, or filtered out. */
static __always_inline int ns_pkt_identity(void *skb, struct ns_pkt_id *id, u32 *ip_len, u32 *skb_len)
{
    struct ns_pkt p = {};
    struct ns_skb_view v = {};
    unsigned char *ip = ns_skb_parse_view(skb, &p, &v);
    if (!ip || !p.has_ip || !ns_flow_match(&p.flow))
        return 0;
    id->saddr = p.flow.saddr;
    id->daddr = p.flow.daddr;
    id->proto = p.flow.proto;
    id->ip_id = p.ip_id;
    if (p.flow.proto == 1) {
        id->sport = p.icmp_id;
        id->dport = p.icmp_seq;
    } else {
        id->sport = p.flow.sport;
        id->dport = p.flow.dport;
    }
    unsigned char *data = v.data;
    u32 len = v.len, data_len = v.data_len;
#ifndef NS_SKB_WIN_LENS  /* not in the parser's window: docs/bpf.md#parsing-a-packet-ns_skb_parse */
    NS_READ(len, skb, SKB_LEN);
    NS_READ(data_len, skb, SKB_DATA_LEN);
#endif
    *ip_len = p.ip_len;
    *skb_len = len;
    if (p.flow.proto == 6) {
        id->disc = p.tcp_seq;
        return 1;
    }
    u32 n = p.payload_len < NS_DISC_BYTES ? p.payload_len : NS_DISC_BYTES;
    unsigned char *payload = ip + (p.ip_len - p.payload_len);
    if (n && data && len >= data_len && payload + n <= data + (len - data_len)) {
        u8 b[NS_DISC_BYTES] = {};
        if (v.payload_in_burst)
            id->disc = ns_payload_hash(v.burst + NS_BURST_PAYLOAD, n);
        else if (bpf_probe_read_kernel(b, sizeof(b), payload) == 0)
            id->disc = ns_payload_hash(b, n);
    }
    return 1;
}

static __always_inline int ns_pkt_id_unhashed(struct ns_pkt_id *id)
{
    if (!id->disc || id->proto == 6)
        return 0;
    id->disc = 0;
    return 1;
}
#endif

static __always_inline u64 ns_kprobe_arg(struct pt_regs *ctx, int n)
{
    switch (n) {
    case 1: return PT_REGS_PARM1(ctx);
    case 2: return PT_REGS_PARM2(ctx);
    case 3: return PT_REGS_PARM3(ctx);
    case 4: return PT_REGS_PARM4(ctx);
    case 5: return PT_REGS_PARM5(ctx);
    case 6: return PT_REGS_PARM6(ctx);
    }
    return 0;
}

/* A trampoline program's context is the function's arguments, 64 bits each (docs/bpf.md#trampolines). */
static __always_inline u64 ns_fentry_arg(unsigned long long *ctx, int n)
{
    switch (n) {
    case 1: return ctx[0];
    case 2: return ctx[1];
    case 3: return ctx[2];
    case 4: return ctx[3];
    case 5: return ctx[4];
    case 6: return ctx[5];
    }
    return 0;
}

/* A hook on a function's entry twice, as a kprobe (NAME) and a trampoline program (fentry_NAME),
 * each calling BODY(its argument number ARG, any constants after it): the probe's driver picks
 * one (probes/runtime/attach.py). */
#define NS_ENTRY_HOOK(NAME, ARG, BODY, ...) \
    int NAME(struct pt_regs *ctx) { return BODY((void *)ns_kprobe_arg(ctx, ARG), ##__VA_ARGS__); } \
    int fentry_##NAME(unsigned long long *ctx) { return BODY((void *)ns_fentry_arg(ctx, ARG), ##__VA_ARGS__); }
/* the same, BODY taking the context first (for perf_submit) */
#define NS_ENTRY_HOOK_CTX(NAME, ARG, BODY, ...) \
    int NAME(struct pt_regs *ctx) { return BODY(ctx, (void *)ns_kprobe_arg(ctx, ARG), ##__VA_ARGS__); } \
    int fentry_##NAME(unsigned long long *ctx) \
    { return BODY(ctx, (void *)ns_fentry_arg(ctx, ARG), ##__VA_ARGS__); }
/* the same with two of the function's arguments */
#define NS_ENTRY_HOOK2(NAME, ARG_A, ARG_B, BODY) \
    int NAME(struct pt_regs *ctx) \
    { return BODY((void *)ns_kprobe_arg(ctx, ARG_A), (void *)ns_kprobe_arg(ctx, ARG_B)); } \
    int fentry_##NAME(unsigned long long *ctx) \
    { return BODY((void *)ns_fentry_arg(ctx, ARG_A), (void *)ns_fentry_arg(ctx, ARG_B)); }
/* A hook on a function's return twice, as a kretprobe (NAME) and a trampoline program (fexit_NAME),
 * each calling BODY(the return value); RET_AT: the function's argument count, where a trampoline
 * finds its return value (the driver's, from BTF: probes/runtime/fentry.py return_slot). */
#define NS_RETURN_HOOK(NAME, RET_AT, BODY) \
    int NAME(struct pt_regs *ctx) { return BODY(PT_REGS_RC(ctx)); } \
    int fexit_##NAME(unsigned long long *ctx) { return BODY(ctx[RET_AT]); }
/* the same for a body that needs nothing of the function: BODY(the context, for perf_submit) */
#define NS_EXIT_HOOK(NAME, BODY) \
    int NAME(struct pt_regs *ctx) { return BODY(ctx); } \
    int fexit_##NAME(unsigned long long *ctx) { return BODY(ctx); }

/* The drop hook: the program defines ns_on_drop() and expands NS_DEFINE_DROP_HOOK() in its own
 * file, where BCC makes tracepoint structs (docs/bpf.md#the-drop-hook-ns_define_drop_hook). */
/* the reason of an OVS drop action (netsleuth_ovs_drop.inc.c) */
#define NS_REASON_OVS_DROP_ACTION 0x7fff0001

#if defined(NS_DROP_RAW_TP) && NS_DROP_RAW_TP
/* kfree_skb(skb, location[, reason[, rx_sk]]) on every kernel with the tracepoint */
#define NS_DEFINE_DROP_HOOK()                                                       \
    int ns_raw_drop(struct bpf_raw_tracepoint_args *ctx)                            \
    {                                                                               \
        u32 reason = NS_DROP_HAS_REASON ? (u32)ctx->args[2] : 0;                    \
        return ns_on_drop(ctx, (void *)ctx->args[0], reason, ctx->args[1]);         \
    }
#elif defined(NS_DROP_TP) && NS_DROP_TP
#if NS_DROP_HAS_REASON
#define NS_TP_REASON(args) ((u32)(args)->reason)
#ifndef NS_KERNEL_HEADERS
/* BCC's generated tracepoint struct names this enum; the values come from tracefs. */
enum skb_drop_reason { SKB_DROP_REASON_NOT_DROPPED_YET = 0 };
#endif
#else
#define NS_TP_REASON(args) 0
#endif
#define NS_DEFINE_DROP_HOOK()                                                       \
    TRACEPOINT_PROBE(skb, kfree_skb)                                                \
    {                                                                               \
        return ns_on_drop(args, args->skbaddr, NS_TP_REASON(args), (u64)args->location); \
    }
#elif defined(NS_DROP_TP)
/* location: the return address, at the stack pointer on entry */
#define NS_DEFINE_DROP_HOOK()                                                       \
    int ns_kprobe_drop(struct pt_regs *ctx)                                         \
    {                                                                               \
        void *skb = (void *)ns_kprobe_arg(ctx, NS_KPROBE_SKB_ARG);                  \
        u32 reason = NS_KPROBE_REASON_ARG ? (u32)ns_kprobe_arg(ctx, NS_KPROBE_REASON_ARG) : 0; \
        u64 location = 0;                                                           \
        bpf_probe_read_kernel(&location, sizeof(location), (void *)PT_REGS_SP(ctx)); \
        return ns_on_drop(ctx, skb, reason, location);                              \
    }
#endif

#endif /* NETSLEUTH_H */
