/* The thread filter of the root-cause probes (offcpu, futex): -p PID, --tid TID...,
 * never the tracer itself.  Python fills `tids` after load (probes/target.py).
 *
 * Constants: NS_F_TGID (0 = any process), NS_SELF_TGID (the tracer), NS_F_TIDS
 * (only threads in `tids`), NS_MAX_TIDS (its size: the number of --tid threads).
 *
 * This file calls a map, which BCC rewrites only in the main file: the loader
 * pastes it in where a program includes it (probes/runtime/loader.py). */
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
