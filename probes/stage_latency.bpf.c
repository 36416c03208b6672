/* Per-packet latency between stages of the host / VM network path (guide tools 3 and 4),
 * a packet followed by its identity: docs/bpf.md#stage_latencybpfc */
#include "netsleuth.h"

#define NS_MAX_STAGES 8

struct pkt_state {
    u64 first_ns;
    u64 last_ns;
    u32 last_stage;
    u32 stages_seen;    /* bit mask */
#if NS_DETAILS          /* what the events tell per stage; the summary needs none of it */
    u64 stage_ns[NS_MAX_STAGES];
    u32 stage_cpu[NS_MAX_STAGES];
    u32 stage_ifindex[NS_MAX_STAGES];
    u32 stage_pid[NS_MAX_STAGES];
    u32 stage_len[NS_MAX_STAGES];         /* skb->len */
    char stage_comm[NS_MAX_STAGES * 16];  /* flat: BCC cannot describe 2-D arrays */
    char stage_dev[NS_MAX_STAGES * 16];
    u32 ip_len;
    u32 pad;
#endif
};

/* log2 histogram of the time (us) between stage `prev` and stage `cur` (cur == 0xff: total). */
struct hist_key {
    u8 prev;
    u8 cur;
    u8 slot;
    u8 pad;
};

BPF_TABLE("lru_hash", struct ns_pkt_id, struct pkt_state, inflight, NS_MAX_INFLIGHT);
BPF_PERCPU_HASH(hists, struct hist_key, u64, 1024);
/* [0] packets started, [1] packets completed, [2] stage seen out of order/without start,
 * [3] unfinished packets replaced by a new one with the same identity */
BPF_PERCPU_ARRAY(counters, u64, 4);
BPF_PERCPU_ARRAY(scratch, struct pkt_state, 1);
#if NS_DETAILS
#include "netsleuth_events.inc.c"
#endif

static __always_inline void count(int idx)
{
    u64 *v = counters.lookup(&idx);
    if (v)
        __sync_fetch_and_add(v, 1);
}

static __always_inline void hist_add(u8 prev, u8 cur, u64 delta_ns)
{
    u64 us = delta_ns / 1000;
    struct hist_key k = {.prev = prev, .cur = cur};
    k.slot = ns_log2(us);
    /* lookup, then insert-if-absent: exact even when two CPUs start the same slot. */
    u64 *v = hists.lookup(&k);
    if (v) {
        __sync_fetch_and_add(v, 1);
        return;
    }
    u64 one = 1;
    if (hists.insert(&k, &one) != 0) {
        v = hists.lookup(&k);
        if (v)
            __sync_fetch_and_add(v, 1);
    }
}

#if NS_DETAILS
static __always_inline void note_stage(struct pkt_state *st, u32 stage, void *skb, u32 skb_len)
{
    u32 i = stage & (NS_MAX_STAGES - 1);
    void *dev = ns_skb_dev(skb);
    st->stage_ns[i] = st->last_ns;
    st->stage_cpu[i] = bpf_get_smp_processor_id();
    st->stage_ifindex[i] = ns_dev_ifindex(dev);
    st->stage_pid[i] = bpf_get_current_pid_tgid();
    st->stage_len[i] = skb_len;
    bpf_get_current_comm(st->stage_comm + 16 * i, 16);
    ns_dev_name(dev, st->stage_dev + 16 * i);
}
#endif

static __always_inline int on_stage(void *ctx, u32 stage, void *skb)
{
    struct ns_pkt_id id = {};
    u32 ip_len = 0, skb_len = 0;
    u64 now = bpf_ktime_get_ns();

    if (!skb || !ns_pkt_identity(skb, &id, &ip_len, &skb_len))
        return 0;
    /* a stage at the user's interfaces counts there only (it runs for other ports too) */
    if (stage == NS_DEV_A_STAGE && !ns_dev_is(ns_skb_dev(skb), NS_DEV_A_IFINDEX, NS_DEV_A_NETNS))
        return 0;
    if (stage == NS_DEV_B_STAGE && !ns_dev_is(ns_skb_dev(skb), NS_DEV_B_IFINDEX, NS_DEV_B_NETNS))
        return 0;

    struct pkt_state *st = inflight.lookup(&id);
    if (stage == 0) {
        int zero = 0;
        struct pkt_state *init = scratch.lookup(&zero);
        if (!init)
            return 0;
        if (st)
            count(3);
        __builtin_memset(init, 0, sizeof(*init));
        init->first_ns = now;
        init->last_ns = now;
        init->stages_seen = 1;
#if NS_DETAILS
        init->ip_len = ip_len;
        note_stage(init, 0, skb, skb_len);
#endif
        inflight.update(&id, init);
        count(0);
        return 0;
    }
    if (!st && ns_pkt_id_unhashed(&id))
        st = inflight.lookup(&id);  /* started where its payload was not in the linear data */
    if (!st || stage >= NS_MAX_STAGES) {
        count(2);
        return 0;
    }
    if (st->stages_seen & (1u << stage))
        return 0;  /* a clone passing the same stage again: keep the first time */
    hist_add(st->last_stage, stage, now - st->last_ns);
    st->stages_seen |= 1u << stage;
    st->last_stage = stage;
    st->last_ns = now;
#if NS_DETAILS
    note_stage(st, stage, skb, skb_len);
#endif
    if (stage == NS_LAST_STAGE) {
        u64 total = now - st->first_ns;
        hist_add(0, 0xff, total);
        count(1);
#if NS_DETAILS
        if (total >= NS_THRESHOLD_NS)
            ns_emit(ctx, st, sizeof(*st));
#endif
        inflight.delete(&id);
    }
    return 0;
}

static __always_inline void *stage_skb(void *p, int deref)
{
    if (deref && p) {
        void *skb = 0;
        bpf_probe_read_kernel(&skb, sizeof(skb), p);
        return skb;
    }
    return p;
}

/* each stage twice: a kprobe program and a trampoline one (probes/runtime/fentry.py) */
#define NS_STAGE(N) \
    int stage_##N(struct pt_regs *ctx) \
    { return on_stage(ctx, N, stage_skb((void *)ns_kprobe_arg(ctx, NS_STAGE##N##_ARG), NS_STAGE##N##_DEREF)); } \
    int fentry_stage_##N(unsigned long long *ctx) \
    { return on_stage(ctx, N, stage_skb((void *)ns_fentry_arg(ctx, NS_STAGE##N##_ARG), NS_STAGE##N##_DEREF)); }

/* Receive stages on kernels without kprobes too: the net:netif_receive_skb tracepoint. */
#ifdef NS_TP_NETIF_RECEIVE_STAGE
TRACEPOINT_PROBE(net, netif_receive_skb)
{
    return on_stage(args, NS_TP_NETIF_RECEIVE_STAGE, args->skbaddr);
}
#endif

NS_STAGE(0)
NS_STAGE(1)
NS_STAGE(2)
NS_STAGE(3)
NS_STAGE(4)
NS_STAGE(5)
NS_STAGE(6)
NS_STAGE(7)
