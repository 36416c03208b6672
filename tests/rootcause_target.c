/* Programs with known behaviour for the root-cause probe tests (compiled by the
 * tests with gcc -fno-omit-frame-pointer, so our own frames unwind).
 *
 * Protocol on stdin/stdout, one JSON object per line:
 *   1. prints {"pid":P,"tids":{"name":tid,...}} once its worker threads exist;
 *   2. waits for a line on stdin, then the workers do their known work;
 *   3. prints the ground truth it measured itself;
 *   4. waits for another line on stdin and exits.
 * Workers wait for the start by polling a flag with short sleeps, never with a
 * futex or a lock, so that nothing but the work itself shows in the probes.
 *
 * Modes:
 *   sleep               thread "sleeper" sleeps 30, 60 and 120 ms
 *   futex N M [T]       threads "waiter1" and "waiter2" each make N FUTEX_WAIT calls
 *                       (T ms timeout, default 1; concurrently); thread "waker" makes M FUTEX_WAKE calls
 *   mutex               thread "holder" takes a mutex and keeps it 200 ms; thread "waiter"
 *                       asks for it right after
 *   rwlock [H W]        the same with a rwlock, which the holder takes as H and the waiter asks
 *                       for as W: rd (shared) or wr; by default wr rd
 *   burst MS            thread "burner" idles 1 s, then spins MS ms
 *   blocks K:MS,...     thread "blocker" blocks in turn: K poll = in poll() for MS ms, K lock =
 *                       MS ms waiting for a mutex that thread "holder" keeps that long
 *   churn N             thread "spawner" starts N threads one after the other, each ending at once
 *   threads NAME...     idle threads with these names (up to 4)
 *   handlers S          threads "handler1".."handler3" for S seconds: take a shared mutex, compute
 *                       1 ms, release it, sleep 5 ms (ovs-vswitchd's handlers, as a CPU load)
 *   spinhold MS N       thread "holder" (nice -10) N times takes a mutex and computes MS ms holding
 *                       it (it runs, never sleeps, while holding); thread "waiter" asks for it each
 *                       time right after */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/futex.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define MAX_WORKERS 4

static volatile int started, quit;
static volatile int finished;
static const char *mode;
static long arg1, arg2, arg3;

static double mono_us(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}

static double wall_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static void pause_ms(long ms)
{
    struct timespec t = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&t, NULL);
}

static void wait_for_start(void)
{
    while (!started)
        pause_ms(2);
}

static void park_until_quit(void)
{
    __sync_fetch_and_add(&finished, 1);
    while (!quit)
        pause_ms(5);
}

/* ---- sleep ---------------------------------------------------------------- */
static const long sleeps_ms[] = {30, 60, 120};
static double slept_us[3];

__attribute__((noinline)) static void nap_ms(long ms) { pause_ms(ms); }

__attribute__((noinline)) static void *sleeper_main(void *unused)
{
    wait_for_start();
    for (int i = 0; i < 3; i++) {
        double t0 = mono_us();
        nap_ms(sleeps_ms[i]);
        slept_us[i] = mono_us() - t0;
    }
    park_until_quit();
    return NULL;
}

/* ---- futex ------------------------------------------------------------------ */
static int futex_words[2];
static long timeouts[2];

__attribute__((noinline)) static void *futex_waiter_main(void *arg)
{
    long idx = (long)arg;
    long ms = arg3 > 0 ? arg3 : 1;
    struct timespec timeout = {ms / 1000, (ms % 1000) * 1000000L};
    wait_for_start();
    for (long i = 0; i < arg1; i++)
        if (syscall(SYS_futex, &futex_words[idx], FUTEX_WAIT_PRIVATE, 0, &timeout, NULL, 0) < 0 &&
            errno == ETIMEDOUT)
            timeouts[idx]++;
    park_until_quit();
    return NULL;
}

__attribute__((noinline)) static void *futex_waker_main(void *unused)
{
    static int nobody_waits;
    wait_for_start();
    for (long i = 0; i < arg2; i++)
        syscall(SYS_futex, &nobody_waits, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
    park_until_quit();
    return NULL;
}

/* ---- mutex / rwlock ---------------------------------------------------------- */
static pthread_mutex_t mutex = PTHREAD_MUTEX_INITIALIZER;
static pthread_rwlock_t rwlock = PTHREAD_RWLOCK_INITIALIZER;
static volatile int lock_taken;
static double wait_us, hold_us;
static int holder_writes = 1, waiter_writes = 0;  /* rwlock: how each takes it */

static int use_rwlock(void) { return strcmp(mode, "rwlock") == 0; }

static void take_rwlock(int write)
{
    if (write)
        pthread_rwlock_wrlock(&rwlock);
    else
        pthread_rwlock_rdlock(&rwlock);
}

__attribute__((noinline)) static void hold_lock(void)
{
    double t0;
    if (use_rwlock())
        take_rwlock(holder_writes);
    else
        pthread_mutex_lock(&mutex);
    t0 = mono_us();
    lock_taken = 1;
    pause_ms(200);
    hold_us = mono_us() - t0;
    if (use_rwlock())
        pthread_rwlock_unlock(&rwlock);
    else
        pthread_mutex_unlock(&mutex);
}

__attribute__((noinline)) static void wait_for_lock(void)
{
    double t0 = mono_us();
    if (use_rwlock())
        take_rwlock(waiter_writes);
    else
        pthread_mutex_lock(&mutex);
    wait_us = mono_us() - t0;
    if (use_rwlock())
        pthread_rwlock_unlock(&rwlock);
    else
        pthread_mutex_unlock(&mutex);
}

__attribute__((noinline)) static void *holder_main(void *unused)
{
    wait_for_start();
    hold_lock();
    park_until_quit();
    return NULL;
}

__attribute__((noinline)) static void *waiter_main(void *unused)
{
    wait_for_start();
    while (!lock_taken)
        ;  /* spin: start waiting the moment the holder has the lock */
    wait_for_lock();
    park_until_quit();
    return NULL;
}

/* ---- handlers / spinhold ------------------------------------------------------ */
static pthread_mutex_t shared_mutex = PTHREAD_MUTEX_INITIALIZER;
static long handler_loops[3];
static double handler_max_wait_us;
#define MAX_ROUNDS 16
static double spin_hold_us[MAX_ROUNDS], spin_wait_us[MAX_ROUNDS];
static volatile long round_taken, round_done;

__attribute__((noinline)) static void compute_ms(double ms)
{
    double until = mono_us() + ms * 1000.0;
    while (mono_us() < until)
        ;
}

__attribute__((noinline)) static void *handler_main(void *arg)
{
    long idx = (long)arg;
    wait_for_start();
    double until = mono_us() + arg1 * 1e6;
    while (mono_us() < until) {
        double t0 = mono_us();
        pthread_mutex_lock(&shared_mutex);
        double waited = mono_us() - t0;
        compute_ms(1);
        pthread_mutex_unlock(&shared_mutex);
        if (waited > handler_max_wait_us)
            handler_max_wait_us = waited;  /* a racy max is fine for a ground truth bound */
        handler_loops[idx]++;
        pause_ms(5);
    }
    park_until_quit();
    return NULL;
}

__attribute__((noinline)) static void hold_while_computing(long round)
{
    pthread_mutex_lock(&shared_mutex);
    double t0 = mono_us();
    round_taken = round;
    compute_ms(arg1);
    spin_hold_us[round - 1] = mono_us() - t0;
    pthread_mutex_unlock(&shared_mutex);
}

__attribute__((noinline)) static void *spin_holder_main(void *unused)
{
    setpriority(PRIO_PROCESS, syscall(SYS_gettid), -10);  /* as root: its hold is spent running */
    wait_for_start();
    for (long r = 1; r <= arg2 && r <= MAX_ROUNDS; r++) {
        hold_while_computing(r);
        while (round_done < r)
            pause_ms(1);
        pause_ms(300);
    }
    park_until_quit();
    return NULL;
}

__attribute__((noinline)) static void *spin_waiter_main(void *unused)
{
    wait_for_start();
    for (long r = 1; r <= arg2 && r <= MAX_ROUNDS; r++) {
        while (round_taken < r)
            pause_ms(1);
        double t0 = mono_us();
        pthread_mutex_lock(&shared_mutex);
        spin_wait_us[r - 1] = mono_us() - t0;
        pthread_mutex_unlock(&shared_mutex);
        round_done = r;
    }
    park_until_quit();
    return NULL;
}

/* ---- burst ------------------------------------------------------------------ */
static double burst_start, burst_end;

__attribute__((noinline)) static void *burner_main(void *unused)
{
    wait_for_start();
    pause_ms(1000);
    burst_start = wall_s();
    double until = mono_us() + arg1 * 1000.0;
    while (mono_us() < until)
        ;
    burst_end = wall_s();
    park_until_quit();
    return NULL;
}

/* ---- blocks ------------------------------------------------------------------ */
#define MAX_BLOCKS 8
static char block_kind[MAX_BLOCKS][8];
static long block_ms[MAX_BLOCKS];
static double block_us[MAX_BLOCKS];
static int nblocks;
static pthread_mutex_t block_mutex = PTHREAD_MUTEX_INITIALIZER;
static volatile int hold_wanted = -1, hold_taken = -1;  /* index of the lock block */

static void parse_blocks(const char *spec)
{
    char copy[256], *save = NULL;
    snprintf(copy, sizeof(copy), "%s", spec);
    for (char *tok = strtok_r(copy, ",", &save); tok && nblocks < MAX_BLOCKS; tok = strtok_r(NULL, ",", &save))
        if (sscanf(tok, "%7[a-z]:%ld", block_kind[nblocks], &block_ms[nblocks]) == 2)
            nblocks++;
}

__attribute__((noinline)) static void *block_holder_main(void *unused)
{
    wait_for_start();
    for (int i = 0; i < nblocks; i++) {
        if (strcmp(block_kind[i], "lock"))
            continue;
        while (hold_wanted != i)
            pause_ms(1);
        pthread_mutex_lock(&block_mutex);
        hold_taken = i;
        pause_ms(block_ms[i]);
        pthread_mutex_unlock(&block_mutex);
    }
    park_until_quit();
    return NULL;
}

__attribute__((noinline)) static void wait_in_poll(long ms) { poll(NULL, 0, (int)ms); }

__attribute__((noinline)) static void wait_for_block_mutex(void)
{
    pthread_mutex_lock(&block_mutex);
    pthread_mutex_unlock(&block_mutex);
}

__attribute__((noinline)) static void *blocker_main(void *unused)
{
    wait_for_start();
    for (int i = 0; i < nblocks; i++) {
        double t0;
        if (!strcmp(block_kind[i], "lock")) {
            hold_wanted = i;
            while (hold_taken != i)
                ;  /* spin: ask the moment the holder has it */
            t0 = mono_us();
            wait_for_block_mutex();
        } else {
            t0 = mono_us();
            wait_in_poll(block_ms[i]);
        }
        block_us[i] = mono_us() - t0;
        pause_ms(5);
    }
    park_until_quit();
    return NULL;
}

/* ---- churn ------------------------------------------------------------------- */
static void *end_at_once(void *unused) { return NULL; }

__attribute__((noinline)) static void *spawner_main(void *unused)
{
    wait_for_start();
    for (long i = 0; i < arg1; i++) {
        pthread_t t;
        pthread_create(&t, NULL, end_at_once, NULL);
        pthread_join(t, NULL);
    }
    park_until_quit();
    return NULL;
}

/* ---- threads ----------------------------------------------------------------- */
__attribute__((noinline)) static void *idle_main(void *unused)
{
    wait_for_start();
    park_until_quit();
    return NULL;
}

/* ------------------------------------------------------------------------------ */
struct worker {
    const char *name;
    void *(*main)(void *);
    void *arg;
    pthread_t thread;
    volatile long tid;
};

static struct worker workers[MAX_WORKERS];
static int nworkers;

static void *trampoline(void *p)
{
    struct worker *w = p;
    pthread_setname_np(pthread_self(), w->name);
    w->tid = syscall(SYS_gettid);
    return w->main(w->arg);
}

static void add_worker(const char *name, void *(*main)(void *), void *arg)
{
    struct worker *w = &workers[nworkers++];
    w->name = name;
    w->main = main;
    w->arg = arg;
    pthread_create(&w->thread, NULL, trampoline, w);
}

static void print_truth(void)
{
    if (!strcmp(mode, "sleep"))
        printf("{\"requested_ms\":[30,60,120],\"slept_us\":[%.0f,%.0f,%.0f]}\n", slept_us[0], slept_us[1],
               slept_us[2]);
    else if (!strcmp(mode, "futex"))
        printf("{\"waits\":%ld,\"wakes\":%ld,\"timeouts\":[%ld,%ld]}\n", arg1, arg2, timeouts[0], timeouts[1]);
    else if (!strcmp(mode, "burst"))
        printf("{\"start\":%.6f,\"end\":%.6f}\n", burst_start, burst_end);
    else if (!strcmp(mode, "churn"))
        printf("{\"spawned\":%ld}\n", arg1);
    else if (!strcmp(mode, "threads"))
        printf("{}\n");
    else if (!strcmp(mode, "handlers"))
        printf("{\"loops\":[%ld,%ld,%ld],\"max_lock_wait_us\":%.0f}\n", handler_loops[0], handler_loops[1],
               handler_loops[2], handler_max_wait_us);
    else if (!strcmp(mode, "spinhold")) {
        printf("{\"lock\":\"%p\",\"hold_us\":[", (void *)&shared_mutex);
        for (long r = 0; r < arg2 && r < MAX_ROUNDS; r++)
            printf("%s%.0f", r ? "," : "", spin_hold_us[r]);
        printf("],\"wait_us\":[");
        for (long r = 0; r < arg2 && r < MAX_ROUNDS; r++)
            printf("%s%.0f", r ? "," : "", spin_wait_us[r]);
        printf("]}\n");
    }
    else if (!strcmp(mode, "blocks")) {
        printf("{\"blocks\":[");
        for (int i = 0; i < nblocks; i++)
            printf("%s{\"kind\":\"%s\",\"ms\":%ld,\"us\":%.0f}", i ? "," : "", block_kind[i], block_ms[i],
                   block_us[i]);
        printf("]}\n");
    }
    else
        printf("{\"lock\":\"%p\",\"wait_us\":%.0f,\"hold_us\":%.0f}\n",
               use_rwlock() ? (void *)&rwlock : (void *)&mutex, wait_us, hold_us);
}

int main(int argc, char **argv)
{
    char line[64];
    if (argc < 2) {
        fprintf(stderr, "usage: %s sleep | futex N M [T] | mutex | rwlock [rd|wr rd|wr] | burst MS | "
                "blocks K:MS,... | churn N | threads NAME... | handlers S | spinhold MS N\n", argv[0]);
        return 2;
    }
    mode = argv[1];
    arg1 = argc > 2 ? atol(argv[2]) : 0;
    arg2 = argc > 3 ? atol(argv[3]) : 0;
    arg3 = argc > 4 ? atol(argv[4]) : 0;
    if (!strcmp(mode, "sleep")) {
        add_worker("sleeper", sleeper_main, NULL);
    } else if (!strcmp(mode, "futex")) {
        add_worker("waiter1", futex_waiter_main, (void *)0L);
        add_worker("waiter2", futex_waiter_main, (void *)1L);
        add_worker("waker", futex_waker_main, NULL);
    } else if (!strcmp(mode, "mutex") || !strcmp(mode, "rwlock")) {
        if (argc > 3) {
            holder_writes = !strcmp(argv[2], "wr");
            waiter_writes = !strcmp(argv[3], "wr");
        }
        add_worker("holder", holder_main, NULL);
        add_worker("waiter", waiter_main, NULL);
    } else if (!strcmp(mode, "burst")) {
        add_worker("burner", burner_main, NULL);
    } else if (!strcmp(mode, "blocks")) {
        parse_blocks(argc > 2 ? argv[2] : "");
        add_worker("holder", block_holder_main, NULL);
        add_worker("blocker", blocker_main, NULL);
    } else if (!strcmp(mode, "churn")) {
        add_worker("spawner", spawner_main, NULL);
    } else if (!strcmp(mode, "handlers")) {
        add_worker("handler1", handler_main, (void *)0L);
        add_worker("handler2", handler_main, (void *)1L);
        add_worker("handler3", handler_main, (void *)2L);
    } else if (!strcmp(mode, "spinhold")) {
        add_worker("holder", spin_holder_main, NULL);
        add_worker("waiter", spin_waiter_main, NULL);
    } else if (!strcmp(mode, "threads")) {
        for (int i = 2; i < argc && nworkers < MAX_WORKERS; i++)
            add_worker(argv[i], idle_main, NULL);
    } else {
        fprintf(stderr, "unknown mode %s\n", mode);
        return 2;
    }
    for (int i = 0; i < nworkers; i++)
        while (!workers[i].tid)
            pause_ms(1);
    printf("{\"pid\":%d,\"tids\":{", getpid());
    for (int i = 0; i < nworkers; i++)
        printf("%s\"%s\":%ld", i ? "," : "", workers[i].name, workers[i].tid);
    printf("}}\n");
    fflush(stdout);

    if (!fgets(line, sizeof(line), stdin))
        return 1;
    started = 1;
    while (finished < nworkers)
        pause_ms(5);
    print_truth();
    fflush(stdout);

    if (!fgets(line, sizeof(line), stdin))
        line[0] = 0;
    quit = 1;
    for (int i = 0; i < nworkers; i++)
        pthread_join(workers[i].thread, NULL);
    return 0;
}
