/* ovs-upcall-summary: ovs_dp_upcall to the execute of the same packet (ns_pkt_identity):
 * how long ovs-vswitchd takes to answer a miss (docs/bpf.md#ovs_upcallbpfc) */
#include "netsleuth.h"

struct handler_val {
    u64 count;
    u64 total_ns;
    u64 max_ns;
    char comm[16];
};

BPF_TABLE("lru_hash", struct ns_pkt_id, u64, pending, 16384);
BPF_PERCPU_ARRAY(slots, u64, 64);          /* log2 histogram of latency in us */
BPF_PERCPU_ARRAY(totals, u64, 4);          /* [0] upcalls [1] answered [2] sum ns [3] executes without upcall */
/* The interval's maximum per CPU in slot [epoch & 1] (docs/bpf.md#the-interval-maxima-ovs_upcall-kvm_irqfd) */
BPF_ARRAY(epoch, u64, 1);
BPF_PERCPU_ARRAY(max_ns, u64, 2);
BPF_HASH(handlers, u32, struct handler_val, 1024);

static __always_inline void add(int idx, u64 v)
{
    u64 *p = totals.lookup(&idx);
    if (p)
        __sync_fetch_and_add(p, v);
}

static __always_inline int upcall(void *skb)
{
    struct ns_pkt_id id = {};
    u32 ip_len = 0, skb_len = 0;
    if (!skb || !ns_pkt_identity(skb, &id, &ip_len, &skb_len))
        return 0;
    u64 now = bpf_ktime_get_ns();
    pending.update(&id, &now);
    add(0, 1);
    return 0;
}

static __always_inline int answer(void *skb)
{
    struct ns_pkt_id id = {};
    u32 ip_len = 0, skb_len = 0;
    if (!skb || !ns_pkt_identity(skb, &id, &ip_len, &skb_len))
        return 0;
    u64 *start = pending.lookup(&id);
    if (!start && ns_pkt_id_unhashed(&id))
        start = pending.lookup(&id);  /* its payload was not in the linear data at the upcall */
    if (!start) {
        add(3, 1);  /* not the answer to an upcall this probe saw: counted, so a mismatch shows */
        return 0;
    }
    u64 delta = bpf_ktime_get_ns() - *start;
    pending.delete(&id);

    int slot = ns_log2(delta / 1000);
    u64 *c = slots.lookup(&slot);
    if (c)
        __sync_fetch_and_add(c, 1);
    add(1, 1);
    add(2, delta);
    int zero = 0;
    u64 *e = epoch.lookup(&zero);
    int half = e ? (*e & 1) : 0;
    u64 *mx = max_ns.lookup(&half);
    if (mx && delta > *mx)
        *mx = delta;  /* per-CPU slot: no other writer */

    u32 tid = bpf_get_current_pid_tgid();
    struct handler_val init = {};
    struct handler_val *h = handlers.lookup_or_try_init(&tid, &init);
    if (h) {
        __sync_fetch_and_add(&h->count, 1);
        __sync_fetch_and_add(&h->total_ns, delta);
        if (delta > h->max_ns)
            h->max_ns = delta;  /* racy only between two answers by one thread: impossible */
        bpf_get_current_comm(h->comm, sizeof(h->comm));
    }
    return 0;
}

NS_ENTRY_HOOK(on_upcall, 2, upcall)  /* ovs_dp_upcall(dp, skb, ...) */
NS_ENTRY_HOOK(on_answer, 3, answer)  /* ovs_flow_key_extract_userspace(net, attr, skb, ...) */
