/* The cost of one hooked kernel function, from user space: N getppid() system calls in a
 * row, timed (bench/hook_cost.py hooks the kernel's syscall function with nothing, a kprobe
 * or a BPF trampoline).  Prints ns per call (wall, and this process's CPU time).
 *
 *   sysloop N */
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static double ns(clockid_t clock)
{
    struct timespec t;
    clock_gettime(clock, &t);
    return t.tv_sec * 1e9 + t.tv_nsec;
}

int main(int argc, char **argv)
{
    if (argc != 2 || atol(argv[1]) <= 0) {
        fprintf(stderr, "usage: sysloop N\n");
        return 2;
    }
    long n = atol(argv[1]);
    double wall = ns(CLOCK_MONOTONIC), cpu = ns(CLOCK_PROCESS_CPUTIME_ID);
    for (long i = 0; i < n; i++)
        syscall(SYS_getppid);
    printf("%.1f %.1f\n", (ns(CLOCK_MONOTONIC) - wall) / n, (ns(CLOCK_PROCESS_CPUTIME_ID) - cpu) / n);
    return 0;
}
