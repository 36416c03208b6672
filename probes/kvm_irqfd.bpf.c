/* kvm-irqfd-stats-summary: an irqfd interrupt's time from accept (t0) to injection (t1), per
 * VM and gsi; the path: docs/bpf.md#kvm_irqfdbpfc */
#define NS_NO_PACKET_HELPERS  /* no packets here: no sk_buff offsets */
#include "netsleuth.h"

#ifndef NS_F_PID
#define NS_F_PID 0
#endif
#define NS_EPOLLIN 0x1
#define NS_EWOULDBLOCK 11
#define NS_SLOTS 32

/* Counter slots of struct line_val; kvm_irqfd.py names them (COUNTERS). */
enum {
    C_SIGNALS,      /* irqfd_wakeup with EPOLLIN: the eventfd was signalled */
    C_FAST_PATH,    /* kvm_arch_set_irq_inatomic delivered it (> 0 vCPUs) */
    C_SLOW_PATH,    /* it returned -EWOULDBLOCK: irqfd_inject queued to a kworker */
    C_NO_TARGET,    /* delivered to no vCPU (fast path <= 0, or a slow run with no accept) */
    C_ACCEPTED,     /* kvm_apic_accept_irq caused by the signal (one per vCPU reached) */
    C_COALESCED,    /* accepted while the same vector was still pending on that vCPU */
    C_POSTED,       /* posted interrupt (APICv/AVIC): no injection event to time */
    C_INJECTED,     /* kvm_inj_virq of a pending vector: the latency samples */
    C_UNTRACKED,    /* accepted for a vCPU thread not seen yet (kvm_arch_vcpu_load) */
    C_SUM_NS,
    C_N,
};

struct irq_mark {      /* the irqfd this thread is delivering right now */
    u64 kvm;
    u32 pid;
    u32 gsi;
    u32 accepted;
    u32 slow;
};

struct vcpu_val {
    u64 kvm;
    u32 vcpu_id;
    u32 pid;
};

struct vcpu_key {
    u64 kvm;
    u32 vcpu_id;
    u32 pad;
};

struct pend_key {
    u64 kvm;
    u32 vcpu_id;
    u32 vector;
};

struct pend_val {
    u64 t0;
    u32 pid;
    u32 gsi;
};

struct line_key {
    u32 pid;
    u32 gsi;
};

struct line_val {
    u64 c[C_N];
    u64 slots[NS_SLOTS];  /* log2 histogram of the latency in us */
};

struct max_key {
    u32 pid;
    u32 gsi;
    u32 half;
    u32 pad;
};

BPF_HASH(marks, u32, struct irq_mark, 4096);
BPF_HASH(vcpus, u32, struct vcpu_val, 4096);          /* vCPU thread -> its vCPU */
BPF_HASH(vcpu_seen, struct vcpu_key, u32, 4096);      /* vCPUs whose thread is known */
BPF_HASH(pending, struct pend_key, struct pend_val, 16384);
BPF_PERCPU_HASH(lines, struct line_key, struct line_val, 1024);
/* The interval's maximum per line in half [epoch & 1] (docs/bpf.md#the-interval-maxima-ovs_upcall-kvm_irqfd) */
BPF_ARRAY(epoch, u64, 1);
BPF_PERCPU_HASH(maxes, struct max_key, u64, 2048);

static __always_inline struct line_val *line(u32 pid, u32 gsi)
{
    struct line_key k = {.pid = pid, .gsi = gsi};
    struct line_val zero = {};
    return lines.lookup_or_try_init(&k, &zero);
}

static __always_inline void count(u32 pid, u32 gsi, int idx)
{
    struct line_val *v = line(pid, gsi);
    if (v && idx >= 0 && idx < C_N)
        v->c[idx]++;  /* per-CPU value: no other writer */
}

static __always_inline u32 current_tid(void)
{
    return (u32)bpf_get_current_pid_tgid();
}

/* Mark this thread as delivering irqfd (a signal: counted); false: its VM is filtered out. */
static __always_inline int mark(void *irqfd, u32 slow)
{
    struct irq_mark m = {.slow = slow};
    void *kvm = 0;
    int gsi = 0, pid = 0;
    NS_READ(kvm, irqfd, IRQFD_KVM);
    NS_READ(gsi, irqfd, IRQFD_GSI);
    if (!kvm || (NS_F_GSI_ON && gsi != NS_F_GSI))
        return 0;
    NS_READ(pid, kvm, KVM_USERSPACE_PID);
    if (NS_F_PID && pid != NS_F_PID)
        return 0;
    m.kvm = (u64)kvm;
    m.pid = pid;
    m.gsi = gsi;
    u32 tid = current_tid();
    marks.update(&tid, &m);
    if (!slow)
        count(m.pid, m.gsi, C_SIGNALS);
    return 1;
}

/* irqfd_wakeup(wait, mode, sync, key) */
static __always_inline int at_irqfd_wakeup(void *wait, void *key)
{
    if (!((u64)key & NS_EPOLLIN))
        return 0;  /* EPOLLHUP: the eventfd is closing */
    mark((char *)wait - NS_OFF_IRQFD_WAIT, 0);
    return 0;
}
NS_ENTRY_HOOK2(on_irqfd_wakeup, 1, 4, at_irqfd_wakeup)

/* the fast path's verdict; the mark ends (interrupts off since irqfd_wakeup) */
static __always_inline int at_set_irq_inatomic_return(u64 ret)
{
    u32 tid = current_tid();
    struct irq_mark *m = marks.lookup(&tid);
    if (!m || m->slow)
        return 0;
    int rc = (int)ret;
    if (rc == -NS_EWOULDBLOCK)
        count(m->pid, m->gsi, C_SLOW_PATH);
    else if (rc > 0)
        count(m->pid, m->gsi, C_FAST_PATH);
    else
        count(m->pid, m->gsi, C_NO_TARGET);
    marks.delete(&tid);
    return 0;
}
NS_RETURN_HOOK(on_set_irq_inatomic_return, NS_RET_AT_SET_IRQ_INATOMIC, at_set_irq_inatomic_return)

/* irqfd_inject(work): the slow path, in a kworker */
static __always_inline int at_irqfd_inject(void *work)
{
    mark((char *)work - NS_OFF_IRQFD_INJECT, 1);
    return 0;
}
NS_ENTRY_HOOK(on_irqfd_inject, 1, at_irqfd_inject)

static __always_inline int at_irqfd_inject_return(void *ctx)
{
    u32 tid = current_tid();
    struct irq_mark *m = marks.lookup(&tid);
    if (!m || !m->slow)
        return 0;
    if (!m->accepted)
        count(m->pid, m->gsi, C_NO_TARGET);
    marks.delete(&tid);
    return 0;
}
NS_EXIT_HOOK(on_irqfd_inject_return, at_irqfd_inject_return)

/* vCPU identity per thread, at kvm_arch_vcpu_load (rarer than VM entries: docs/bpf.md) */
static __always_inline int at_vcpu_load(void *vcpu)
{
    u64 pid_tgid = bpf_get_current_pid_tgid();
    if (NS_F_PID && (pid_tgid >> 32) != NS_F_PID)
        return 0;
    u32 tid = (u32)pid_tgid;
    struct vcpu_val v = {.pid = pid_tgid >> 32};
    NS_READ(v.kvm, vcpu, VCPU_KVM);
    NS_READ(v.vcpu_id, vcpu, VCPU_ID);
    if (!v.kvm)
        return 0;
    struct vcpu_val *known = vcpus.lookup(&tid);
    if (known && known->kvm == v.kvm && known->vcpu_id == v.vcpu_id)
        return 0;  /* the usual case; a reused tid is updated */
    vcpus.update(&tid, &v);
    struct vcpu_key k = {.kvm = v.kvm, .vcpu_id = v.vcpu_id};
    vcpu_seen.update(&k, &tid);
    return 0;
}
NS_ENTRY_HOOK(on_vcpu_load, NS_VCPU_ARG, at_vcpu_load)

/* t0: the interrupt is pending in the vCPU's IRR. */
TRACEPOINT_PROBE(kvm, kvm_apic_accept_irq)
{
    u32 tid = current_tid();
    struct irq_mark *m = marks.lookup(&tid);
    if (!m)
        return 0;  /* not from an irqfd (timer, IPI, QEMU's own MSI) */
    m->accepted++;
    u32 dm = (args->dm >> 8) & 7;
    if (dm > 1)
        return 0;  /* NMI, SMI, INIT...: not a vector injected through the IRR */
    count(m->pid, m->gsi, C_ACCEPTED);
    struct vcpu_key vk = {.kvm = m->kvm, .vcpu_id = args->apicid};
    if (!vcpu_seen.lookup(&vk)) {
        count(m->pid, m->gsi, C_UNTRACKED);  /* its injection could not be told apart */
        return 0;
    }
    struct pend_key pk = {.kvm = m->kvm, .vcpu_id = args->apicid, .vector = args->vec};
    struct pend_val pv = {.t0 = bpf_ktime_get_ns(), .pid = m->pid, .gsi = m->gsi};
    if (pending.insert(&pk, &pv) != 0)
        count(m->pid, m->gsi, C_COALESCED);  /* the IRR bit was still set: merged */
    return 0;
}

#if NS_HAS_APICV_TP
/* APICv/AVIC posted the vector: the CPU injects it without a kvm_inj_virq. */
TRACEPOINT_PROBE(kvm, kvm_apicv_accept_irq)
{
    u32 tid = current_tid();
    struct irq_mark *m = marks.lookup(&tid);
    if (!m)
        return 0;
    struct pend_key pk = {.kvm = m->kvm, .vcpu_id = args->apicid, .vector = args->vec};
    pending.delete(&pk);
    count(m->pid, m->gsi, C_POSTED);
    return 0;
}
#endif

/* t1: the vector goes into the vCPU (this thread is the vCPU's). */
TRACEPOINT_PROBE(kvm, kvm_inj_virq)
{
#if NS_INJ_HAS_FLAGS
    if (args->soft || args->reinjected)
        return 0;  /* an INTn, or a retry of an injection already timed */
    u32 vector = args->vector;
#else
    u32 vector = args->irq;
#endif
    u32 tid = current_tid();
    struct vcpu_val *v = vcpus.lookup(&tid);
    if (!v)
        return 0;
    struct pend_key pk = {.kvm = v->kvm, .vcpu_id = v->vcpu_id, .vector = vector};
    struct pend_val *p = pending.lookup(&pk);
    if (!p)
        return 0;
    u64 delta = bpf_ktime_get_ns() - p->t0;
    u32 pid = p->pid, gsi = p->gsi;
    pending.delete(&pk);
    struct line_val *l = line(pid, gsi);
    if (!l)
        return 0;
    l->c[C_INJECTED]++;
    l->c[C_SUM_NS] += delta;
    u32 slot = ns_log2(delta / 1000);
    if (slot >= NS_SLOTS)
        slot = NS_SLOTS - 1;
    l->slots[slot]++;
    int zero = 0;
    u64 *e = epoch.lookup(&zero);
    struct max_key mk = {.pid = pid, .gsi = gsi, .half = e ? (*e & 1) : 0};
    u64 init = 0;
    u64 *mx = maxes.lookup_or_try_init(&mk, &init);
    if (mx && delta > *mx)
        *mx = delta;
    return 0;
}
