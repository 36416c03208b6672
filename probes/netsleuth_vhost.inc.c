/* A work item's vq, a vq's tap queue: docs/bpf.md#netsleuth_vhostincc-vhost-net-virtqueues */

/* VHOST_NET_VQ_RX, VHOST_NET_VQ_TX */
#define NS_VNET_RX 0
#define NS_VNET_TX 1

/* vhost-net's four work functions: a guest kick or a tap socket wakeup, per direction. */
#define NS_WORK_TX_KICK 0
#define NS_WORK_RX_KICK 1
#define NS_WORK_TX_NET 2
#define NS_WORK_RX_NET 3
#define NS_WORK_OTHER 4

#define NS_EPOLLIN 0x1

static __always_inline int ns_vhost_work_kind(u64 fn)
{
    if (fn == NS_VHOST_HANDLE_TX_KICK)
        return NS_WORK_TX_KICK;
    if (fn == NS_VHOST_HANDLE_RX_KICK)
        return NS_WORK_RX_KICK;
    if (fn == NS_VHOST_HANDLE_TX_NET)
        return NS_WORK_TX_NET;
    if (fn == NS_VHOST_HANDLE_RX_NET)
        return NS_WORK_RX_NET;
    return NS_WORK_OTHER;
}

static __always_inline int ns_vhost_kind_is_rx(int kind)
{
    return kind == NS_WORK_RX_KICK || kind == NS_WORK_RX_NET;
}

static __always_inline int ns_vhost_kind_is_kick(int kind)
{
    return kind == NS_WORK_TX_KICK || kind == NS_WORK_RX_KICK;
}

/* The vq of a work item: vq->poll's, or vhost_net.poll[rx|tx]'s (container_of by hand). */
static __always_inline u64 ns_vhost_work_vq(u64 work, int kind)
{
    u64 poll = work - NS_OFF_VHOST_POLL_WORK;
    if (ns_vhost_kind_is_kick(kind))
        return poll - NS_OFF_VQ_POLL;
    u64 i = ns_vhost_kind_is_rx(kind) ? NS_VNET_RX : NS_VNET_TX;
    u64 net = poll - NS_OFF_VNET_POLL - i * NS_OFF_VHOST_POLL_SIZE;
    return net + NS_OFF_VNET_VQS + i * NS_OFF_VNET_NVQ_SIZE + NS_OFF_VNET_NVQ_VQ;
}

/* The tun_file behind a vq's socket (&tfile->socket), or 0: no tun/tap backend. */
static __always_inline u64 ns_vq_tfile(u64 vq)
{
    u64 sock = 0, ops = 0, recvmsg = 0;
    NS_READ(sock, vq, VQ_PRIVATE_DATA);
    if (!sock)
        return 0;
    NS_READ(ops, sock, SOCKET_OPS);
    if (ops)
        NS_READ(recvmsg, ops, PROTO_OPS_RECVMSG);
    if (recvmsg != NS_TUN_RECVMSG)
        return 0;  /* tun_socket_ops is not in kallsyms without KALLSYMS_ALL: its recvmsg is */
    return sock - NS_OFF_TFILE_SOCKET;
}

/* The tap's name and queue index of a vq; 0 when it has no tap. */
static __always_inline int ns_vq_tap(u64 vq, char *name /* [16] */, u16 *queue)
{
    u64 tfile = ns_vq_tfile(vq), tun = 0, dev = 0;
    if (!tfile)
        return 0;
    NS_READ(*queue, tfile, TFILE_QUEUE_INDEX);
    NS_READ(tun, tfile, TFILE_TUN);
    if (tun)
        NS_READ(dev, tun, TUN_DEV);
    if (!dev)
        return 0;  /* a queue detached from its device */
    bpf_probe_read_kernel(name, 16, (char *)dev + NS_OFF_NETDEV_NAME);
    return 1;
}

/* The eventfd a vq signals the guest through (vq->call_ctx.ctx), 0 when none is set. */
static __always_inline u64 ns_vq_call_ctx(u64 vq)
{
    u64 ctx = 0;
    NS_READ(ctx, vq, VQ_CALL_CTX);
    return ctx;
}
