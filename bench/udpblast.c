/* Minimal UDP load for the benchmarks: "send DST PORT SECONDS [cpu|spread N]" counts datagrams
 * sent with sendmmsg and prints them per second; with "spread N", datagram k goes to port
 * PORT + k % N (each a flow of its own: a new datapath flow); with "cpu", also per second of its own
 * CPU time (which takes in the receive side the kernel runs in its context: softirqs at
 * bottom-half enable, when the kernel has no IRQ time accounting to take them out);
 * "sink PORT SECONDS" counts datagrams received with recvmmsg. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#define BATCH 64

static double clock_s(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static double now(void)
{
    return clock_s(CLOCK_MONOTONIC);
}

int main(int argc, char **argv)
{
    static char buf[BATCH][64];
    struct mmsghdr msgs[BATCH];
    struct iovec iov[BATCH];
    struct sockaddr_in addr = {.sin_family = AF_INET};
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    long long count = 0;

    if (argc < 4 && !(argc == 4 && !strcmp(argv[1], "sink"))) {
        fprintf(stderr, "usage: udpblast send DST PORT SECONDS [cpu|spread N] | udpblast sink PORT SECONDS\n");
        return 2;
    }
    memset(msgs, 0, sizeof(msgs));
    for (int i = 0; i < BATCH; i++) {
        iov[i].iov_base = buf[i];
        iov[i].iov_len = sizeof(buf[i]);
        msgs[i].msg_hdr.msg_iov = &iov[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
    }
    if (!strcmp(argv[1], "send")) {
        double end = now() + atof(argv[4]);
        int port = atoi(argv[3]), spread = argc > 6 && !strcmp(argv[5], "spread") ? atoi(argv[6]) : 0;
        static struct sockaddr_in to[BATCH];
        addr.sin_port = htons(port);
        inet_pton(AF_INET, argv[2], &addr.sin_addr);
        if (spread > 0) {
            for (int i = 0; i < BATCH; i++) {
                to[i] = addr;
                msgs[i].msg_hdr.msg_name = &to[i];
                msgs[i].msg_hdr.msg_namelen = sizeof(to[i]);
            }
        } else if (connect(s, (struct sockaddr *)&addr, sizeof(addr)) < 0) { perror("connect"); return 1; }
        double start = now(), cpu0 = clock_s(CLOCK_THREAD_CPUTIME_ID);
        long long k = 0;
        while (now() < end) {
            for (int i = 0; spread > 0 && i < BATCH; i++)
                to[i].sin_port = htons(port + (k + i) % spread);
            int n = sendmmsg(s, msgs, BATCH, 0);
            if (n > 0) count += n, k += n;
        }
        printf("%.0f", count / (now() - start));
        if (argc > 5 && !strcmp(argv[5], "cpu"))
            printf(" %.0f", count / (clock_s(CLOCK_THREAD_CPUTIME_ID) - cpu0));
        printf("\n");
    } else {
        int big = 64 << 20;
        double secs = atof(argv[3]);
        struct timeval tv = {0, 200000};
        setsockopt(s, SOL_SOCKET, SO_RCVBUFFORCE, &big, sizeof(big));
        setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        addr.sin_port = htons(atoi(argv[2]));
        if (bind(s, (struct sockaddr *)&addr, sizeof(addr)) < 0) { perror("bind"); return 1; }
        printf("ready\n");
        fflush(stdout);
        double end = now() + secs;
        while (now() < end) {
            int n = recvmmsg(s, msgs, BATCH, 0, NULL);
            if (n > 0) count += n;
        }
        printf("%lld\n", count);
    }
    return 0;
}
