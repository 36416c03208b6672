/* The root-cause probes' thread filter: docs/bpf.md#netsleuth_threadsincc-the-thread-filter */
BPF_HASH(tids, u32, u8, NS_MAX_TIDS);

static inline __attribute__((always_inline)) int thread_match(u32 tgid, u32 tid)
{
    if (tid == 0)
        return 0;  /* the idle task */
    if (NS_F_TGID && tgid != NS_F_TGID)
        return 0;
    if (tgid == NS_SELF_TGID)
        return 0;  /* the tracer, when tracing everything */
    if (NS_F_TIDS && !tids.lookup(&tid))
        return 0;
    return 1;
}
