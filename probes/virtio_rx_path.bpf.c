/* virtio-rx-path-monitor (in a guest): per received packet, the time from its RX queue's
 * interrupt through GRO, netif_receive_skb, IP and L4 (docs/output-virt.md#virtio-rx-path-monitor) */
#include "netsleuth.h"
#include "netsleuth_events.inc.c"

/* STAGE_IRQ .. STAGE_L4 and NSTAGES come from the driver's STAGES. */
#define SLOT_TOTAL 0xff

struct pkt {
    u64 stage_ns[NSTAGES];
    u32 seen;  /* bit per stage reached */
    u32 cpu;
    u32 ifindex;
    u32 queue;
    struct ns_flow flow;
    u32 ip_len;
};

struct hist_key {
    u32 ifindex;
    u32 queue;
    u8 stage;  /* the stage reached (its time from the previous one), or SLOT_TOTAL */
    u8 slot;
    u8 pad[6];
};

struct stage_key {
    u32 ifindex;
    u32 queue;
    u32 stage;
};

/* The queue's last interrupt on this CPU: NAPI polls where it ran (docs/bpf.md#virtio_rx_pathbpfc). */
struct irq_seen {
    u64 ns;
    u32 ifindex;
    u32 queue;
};
BPF_PERCPU_ARRAY(last_irq, struct irq_seen, 1);
/* irq number -> its RX queue, filled by user space from /proc/interrupts. */
BPF_HASH(irq_queues, u32, struct stage_key, 1024);
/* Packets on their way up, by skb address; LRU: a packet freed before L4 ages out. */
BPF_TABLE("lru_hash", u64, struct pkt, inflight, NS_MAX_INFLIGHT);
BPF_PERCPU_HASH(hists, struct hist_key, u64, 4096);
BPF_PERCPU_HASH(stage_counts, struct stage_key, u64, 1024);

TRACEPOINT_PROBE(irq, irq_handler_entry)
{
    u32 irq = args->irq;
    struct stage_key *q = irq_queues.lookup(&irq);
    if (!q)
        return 0;
    int zero = 0;
    struct irq_seen *s = last_irq.lookup(&zero);
    if (s) {
        s->ns = bpf_ktime_get_ns();
        s->ifindex = q->ifindex;
        s->queue = q->queue;
    }
    return 0;
}

static __always_inline void count_stage(struct pkt *p, u32 stage, u64 delta_ns)
{
    struct stage_key sk = {.ifindex = p->ifindex, .queue = p->queue, .stage = stage};
    u64 zero = 0;
    u64 *c = stage_counts.lookup_or_try_init(&sk, &zero);
    if (c)
        (*c)++;  /* per CPU: no other writer */
    struct hist_key hk = {.ifindex = p->ifindex, .queue = p->queue, .stage = stage, .slot = ns_log2(delta_ns / 1000)};
    u64 *h = hists.lookup_or_try_init(&hk, &zero);
    if (h)
        (*h)++;
}

/* The packet's end: the total histogram and, past the threshold, an event. */
static __always_inline void finish(void *ctx, u64 skb, struct pkt *p, u64 now)
{
    u32 first = p->seen & (1 << STAGE_IRQ) ? STAGE_IRQ : STAGE_GRO;
    u64 total = now - p->stage_ns[first];
    struct hist_key hk = {.ifindex = p->ifindex, .queue = p->queue, .stage = SLOT_TOTAL, .slot = ns_log2(total / 1000)};
    u64 zero = 0;
    u64 *h = hists.lookup_or_try_init(&hk, &zero);
    if (h)
        (*h)++;
    if (total >= NS_THRESHOLD_NS)
        ns_emit(ctx, p, sizeof(*p));
    inflight.delete(&skb);
}

static __always_inline void stage_hit(void *ctx, u64 skb, u32 stage)
{
    struct pkt *p = inflight.lookup(&skb);
    if (!p || p->seen & (1 << stage))
        return;  /* not a tracked packet, or a stage met twice (e.g. a tunnel's inner packet) */
    u64 now = bpf_ktime_get_ns();
    u64 prev = 0;
#pragma unroll
    for (int i = 0; i < NSTAGES; i++)
        if (i < stage && (p->seen & (1 << i)))
            prev = p->stage_ns[i];
    if (stage < NSTAGES)
        p->stage_ns[stage] = now;
    p->seen |= 1 << stage;
    count_stage(p, stage, now > prev ? now - prev : 0);
    if (stage == NS_LAST_STAGE)
        finish(ctx, skb, p, now);
}

TRACEPOINT_PROBE(net, napi_gro_receive_entry)
{
    void *skb = (void *)args->skbaddr;
    void *dev = ns_skb_dev(skb);
    if (!ns_dev_match(dev))
        return 0;
    struct pkt p = {};
    p.ifindex = ns_dev_ifindex(dev);
    int zero = 0;
    struct irq_seen *s = last_irq.lookup(&zero);
    if (!s || s->ifindex != p.ifindex)
        return 0;  /* polled on a CPU where no virtio-net queue of ours interrupted */
    struct ns_pkt pk = {};
    if (!ns_skb_parse(skb, &pk) || !ns_flow_match(&pk.flow))
        return 0;
    u64 now = bpf_ktime_get_ns();
    p.queue = s->queue;
    p.cpu = bpf_get_smp_processor_id();
    p.flow = pk.flow;
    p.ip_len = pk.ip_len;
    p.stage_ns[STAGE_IRQ] = s->ns;
    p.stage_ns[STAGE_GRO] = now;
    p.seen = (1 << STAGE_IRQ) | (1 << STAGE_GRO);
    count_stage(&p, STAGE_IRQ, 0);
    count_stage(&p, STAGE_GRO, now - s->ns);
    u64 key = (u64)skb;
    inflight.update(&key, &p);  /* a reused skb address starts a new packet */
    return 0;
}

TRACEPOINT_PROBE(net, netif_receive_skb)
{
    stage_hit(args, (u64)args->skbaddr, STAGE_NETIF_RECEIVE);
    return 0;
}

static __always_inline int at_stage(void *ctx, void *skb, u32 stage)
{
    stage_hit(ctx, (u64)skb, stage);
    return 0;
}
/* ip_rcv(skb, ...) and the L4 receive functions (tcp_v4_rcv(skb), udp_rcv(skb)...) */
NS_ENTRY_HOOK_CTX(on_ip, 1, at_stage, STAGE_IP)
NS_ENTRY_HOOK_CTX(on_l4, 1, at_stage, STAGE_L4)
