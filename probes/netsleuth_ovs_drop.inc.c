/* OVS drop actions before 6.6: consume_skb called from the actions, unless just upcalled
 * (docs/bpf.md#netsleuth_ovs_dropincc-ovs-drop-actions-before-66). */
#if defined(NS_OVS_ACTION_LO) && NS_OVS_ACTION_LO
#define NS_OVS_UPCALL_WINDOW_NS 1000000000ULL  /* generous: a TCG vCPU stalls > 10 ms */

struct ns_ovs_upcalled {
    u64 skb;
    u64 ts;
};
BPF_PERCPU_ARRAY(ns_ovs_upcalled, struct ns_ovs_upcalled, 1);

static __always_inline u64 ns_caller(struct pt_regs *ctx)
{
    u64 ret = 0;
    bpf_probe_read_kernel(&ret, sizeof(ret), (void *)PT_REGS_SP(ctx));  /* at entry: the return address */
    return ret;
}

/* ovs_dp_upcall(dp, skb, key, upcall_info, cutlen) */
int ns_kprobe_ovs_upcall(struct pt_regs *ctx)
{
    u64 ret = ns_caller(ctx);
    if (ret < NS_OVS_USERSPACE_LO || ret >= NS_OVS_USERSPACE_HI)
        return 0;  /* a flow miss (ovs_dp_process_packet), not a userspace action */
    int zero = 0;
    struct ns_ovs_upcalled *u = ns_ovs_upcalled.lookup(&zero);
    if (u) {
        u->skb = PT_REGS_PARM2(ctx);
        u->ts = bpf_ktime_get_ns();
    }
    return 0;
}

int ns_kprobe_ovs_consume(struct pt_regs *ctx)
{
    u64 ret = ns_caller(ctx);
    if (ret < NS_OVS_ACTION_LO || ret >= NS_OVS_ACTION_HI)
        return 0;
    u64 skb = PT_REGS_PARM1(ctx);
    int zero = 0;
    struct ns_ovs_upcalled *u = ns_ovs_upcalled.lookup(&zero);
    if (u && u->skb == skb) {
        u->skb = 0;
        if (bpf_ktime_get_ns() - u->ts < NS_OVS_UPCALL_WINDOW_NS)
            return 0;  /* sent to ovs-vswitchd by a userspace action */
    }
    return ns_on_drop(ctx, (void *)skb, NS_REASON_OVS_DROP_ACTION, ret);
}
#endif
