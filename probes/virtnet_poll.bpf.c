/* virtnet-poll-monitor (in a guest): each NAPI poll of a virtio-net RX queue (napi:napi_poll);
 * interrupts come from /proc/interrupts (docs/output-virt.md) */
#include "netsleuth.h"

struct queue_key {
    u32 ifindex;
    u32 queue;
};

struct queue_count {
    u64 polls;
    u64 packets;    /* sum of the polls' work */
    u64 exhausted;  /* polls whose work reached the budget (more was waiting) */
    u64 budget;     /* the last poll's budget (napi weight) */
};

BPF_PERCPU_HASH(counts, struct queue_key, struct queue_count, 1024);
/* Most work in one poll, most free RX descriptors after one: since cleared (each interval). */
BPF_PERCPU_HASH(work_max, struct queue_key, u32, 1024);
BPF_PERCPU_HASH(free_max, struct queue_key, u32, 1024);

TRACEPOINT_PROBE(napi, napi_poll)
{
    void *napi = args->napi;
    void *poll = NULL;
    NS_READ(poll, napi, NAPI_POLL);
    if ((u64)poll != NS_VIRTNET_POLL || args->budget <= 0)
        return 0;  /* another driver, virtio-net's TX poll, or netpoll's budget 0 */
    void *dev = NULL;
    NS_READ(dev, napi, NAPI_DEV);
    if (!ns_dev_match(dev))
        return 0;
    /* napi is receive_queue.napi; the queue's virtqueue has index 2 * queue. */
    void *rq = (char *)napi - NS_OFF_VIRTNET_RQ_NAPI;
    void *vq = NULL;
    NS_READ(vq, rq, VIRTNET_RQ_VQ);
    u32 index = 0, num_free = 0;
    NS_READ(index, vq, VIRTQUEUE_INDEX);
    NS_READ(num_free, vq, VIRTQUEUE_NUM_FREE);
    struct queue_key key = {.ifindex = ns_dev_ifindex(dev), .queue = index / 2};
    u32 work = args->work > 0 ? args->work : 0;

    struct queue_count zero = {};
    struct queue_count *c = counts.lookup_or_try_init(&key, &zero);
    if (c) {
        c->polls++;  /* per CPU: no other writer */
        c->packets += work;
        if (work >= args->budget)
            c->exhausted++;
        c->budget = args->budget;
    }
    u32 none = 0;  /* the maxima are per CPU: no other writer */
    u32 *wmax = work_max.lookup_or_try_init(&key, &none);
    if (wmax && work > *wmax)
        *wmax = work;
    u32 *fmax = free_max.lookup_or_try_init(&key, &none);
    if (fmax && num_free > *fmax)
        *fmax = num_free;
    return 0;
}
