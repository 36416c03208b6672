/* OVS drop actions on kernels whose OVS has no drop reasons of its own (before
 * 6.6, "net: openvswitch: add last-action drop reason"): do_execute_actions
 * frees a packet whose action list ends without an output with consume_skb,
 * unseen by kfree_skb (measured in the lab on 6.1).  A kprobe on consume_skb
 * whose caller lies in [NS_OVS_ACTION_LO, NS_OVS_ACTION_HI) reports it with a
 * synthetic reason.
 *
 * The same call frees a packet whose last action was `userspace` (an OpenFlow
 * controller action, the slow path): handed to ovs-vswitchd, not dropped.  So
 * a kprobe on ovs_dp_upcall called from the actions ([NS_OVS_USERSPACE_LO,
 * NS_OVS_USERSPACE_HI): output_userspace, or do_execute_actions where it is
 * inlined) notes per CPU the skb it hands up; consuming that same skb right
 * after is not a drop.  Actions run with bottom halves off, so nothing else
 * runs on the CPU in between; the time bound only keeps a note from outliving
 * its packet when the skb went on to an output instead.  It is generous: the
 * two are microseconds apart on hardware, but a software-emulated VM's vCPU
 * can sit descheduled on its host for over 10 ms between them (measured in the
 * lab: an 18.6 ms clock gap in 15 s of a guest busy loop; once, with a 10 ms
 * bound, the lab reported a controller packet as a drop).
 *
 * Pasted into the drop programs after NS_DEFINE_DROP_HOOK() (it calls their
 * ns_on_drop and a map: BCC rewrites map calls only in the main file). */
#if defined(NS_OVS_ACTION_LO) && NS_OVS_ACTION_LO
#define NS_OVS_UPCALL_WINDOW_NS 1000000000ULL  /* see above */

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
