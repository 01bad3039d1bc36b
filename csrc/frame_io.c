/* frame_io.c -- see frame_io.h. */
#define _GNU_SOURCE
#include "frame_io.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#ifndef IOV_MAX
#define IOV_MAX 1024
#endif

/* Payloads below this many bytes beyond the copied tail are written with writev alone: splicing a
   few pages saves less than the extra system calls cost. */
#define SC_SPLICE_MIN (256u * 1024u)

double sc_monotonic(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Spin budget in seconds; read once from the environment (a benign race: every thread computes
   the same value). */
static volatile double sc_spin_budget = -1.0;
static volatile int sc_spin_yield = 1;

static double sc_spin_seconds(void) {
    volatile double *budget_p = &sc_spin_budget;
    double b = *budget_p;
    if (b < 0) {
        const char *s = getenv("SPRINT_CONTROL_SPIN_US");
        long us = 200;
        if (s && *s) {
            char *end = NULL;
            long v = strtol(s, &end, 10);
            if (end && *end == '\0' && v >= 0) us = v;
        }
        b = (double)us * 1e-6;
        const char *y = getenv("SPRINT_CONTROL_SPIN_YIELD");
        if (y && y[0] == '0' && y[1] == '\0') sc_spin_yield = 0;
        *budget_p = b;
    }
    return b;
}

/* Spins until fd is ready for `events`, for at most the spin budget (and never past the deadline).
   Returns 1 when ready, 0 when the caller should block (or poll with its deadline) as usual. */
static int sc_spin(int fd, short events, double deadline) {
    double budget = sc_spin_seconds();
    if (budget <= 0) return 0;
    struct pollfd p = {fd, events, 0};
    int rc = poll(&p, 1, 0);
    if (rc != 0) return rc > 0; /* ready (or an error the following call reports) */
    double end = sc_monotonic() + budget;
    if (deadline >= 0 && deadline < end) end = deadline;
    for (;;) {
        sched_yield(); /* lets the peer run first if it shares this CPU */
        rc = poll(&p, 1, 0);
        if (rc != 0) return rc > 0;
        if (sc_monotonic() >= end) return 0;
    }
}

/* Waits until fd is ready for `events` or the deadline passes. */
static int sc_wait(int fd, short events, double deadline, int spin) {
    if (spin && sc_spin(fd, events, deadline)) return 0;
    if (deadline < 0) return 0;
    double left = deadline - sc_monotonic();
    if (left <= 0) return -ETIMEDOUT;
    struct pollfd p = {fd, events, 0};
    int ms = (int)(left * 1000.0) + 1;
    int rc = poll(&p, 1, ms);
    if (rc < 0) return -errno;
    if (rc == 0) return -ETIMEDOUT;
    return 0; /* ready, or POLLHUP/POLLERR: the following read/write reports it */
}

/* Moves the cursor past n transferred bytes. */
static void sc_advance(sc_iov_cursor *cur, size_t n) {
    cur->done += n;
    while (n > 0 && cur->index < cur->count) {
        struct iovec *v = &cur->iov[cur->index];
        if (n >= v->iov_len) {
            n -= v->iov_len;
            v->iov_len = 0;
            cur->index++;
        } else {
            v->iov_base = (char *)v->iov_base + n;
            v->iov_len -= n;
            n = 0;
        }
    }
    while (cur->index < cur->count && cur->iov[cur->index].iov_len == 0) cur->index++;
}

/* One write-side system call: writev, or vmsplice of the same entries. */
static ssize_t sc_push(int fd, const struct iovec *iov, int n, int splice) {
#ifdef SPLICE_F_MOVE
    if (splice) return vmsplice(fd, iov, (unsigned long)n, 0);
#else
    (void)splice;
#endif
    return writev(fd, iov, n);
}

/* RWF_NOWAIT on pipes (Linux 5.x+): try the transfer without blocking first, so a ready pipe costs
   one system call instead of a poll plus the call. Cleared when the kernel refuses the flag. */
static volatile int sc_nowait_ok = 1;

/* One read or write that does not block: bytes moved, or -1 with errno (EAGAIN: not ready). */
static ssize_t sc_try(int fd, const struct iovec *iov, int n, int writing) {
#ifdef RWF_NOWAIT
    if (sc_nowait_ok) {
        ssize_t r = writing ? pwritev2(fd, iov, n, -1, RWF_NOWAIT) : preadv2(fd, iov, n, -1, RWF_NOWAIT);
        if (r >= 0 || (errno != EOPNOTSUPP && errno != EINVAL && errno != ENOSYS)) return r;
        sc_nowait_ok = 0;
    }
#else
    (void)fd; (void)iov; (void)n; (void)writing;
#endif
    errno = EAGAIN;
    return -1;
}

static inline void sc_relax(void);

/* One transfer step: without blocking when the pipe is ready (after a short spin), else waits
   (with the deadline) and makes the blocking call. Returns bytes moved (0: EOF on a read) or
   -errno; -EAGAIN: nothing moved on a non-blocking fd, call again. */
static ssize_t sc_step(int fd, const struct iovec *iov, int n, int writing, int splice, double deadline) {
    if (deadline >= 0 && sc_monotonic() >= deadline) return -ETIMEDOUT;
    ssize_t r;
    if (!splice) {
        r = sc_try(fd, iov, n, writing);
        if (r >= 0) return r;
        if (errno != EAGAIN) return -errno;
        if (sc_nowait_ok) { /* spin: each try is one system call that moves data when there is some */
            double budget = sc_spin_seconds();
            if (budget > 0) {
                double end = sc_monotonic() + budget;
                if (deadline >= 0 && deadline < end) end = deadline;
                do {
                    sc_relax();
                    r = sc_try(fd, iov, n, writing);
                    if (r >= 0) return r;
                    if (errno != EAGAIN) return -errno;
                } while (sc_monotonic() < end);
            }
        }
    }
    int rc = sc_wait(fd, writing ? POLLOUT : POLLIN, deadline, !(sc_nowait_ok && !splice));
    if (rc < 0) return rc;
    if (writing)
        r = sc_push(fd, iov, n, splice);
    else
        r = readv(fd, iov, n);
    if (r >= 0) return r;
    if (errno == EAGAIN) { /* non-blocking fd: wait for the pipe instead of spinning, then go again */
        struct pollfd p = {fd, writing ? POLLOUT : POLLIN, 0};
        if (deadline < 0 && poll(&p, 1, -1) < 0) return -errno;
        return -EAGAIN;
    }
    return -errno;
}

static int sc_write_loop(int fd, sc_iov_cursor *cur, double deadline, int splice) {
    while (cur->index < cur->count && cur->iov[cur->index].iov_len == 0) cur->index++;
    while (cur->index < cur->count) {
        int n = cur->count - cur->index;
        if (n > IOV_MAX) n = IOV_MAX;
        ssize_t w = sc_step(fd, cur->iov + cur->index, n, 1, splice, deadline);
        if (w == -EAGAIN) continue;
        if (w < 0) return (int)w;
        sc_advance(cur, (size_t)w);
    }
    return 0;
}

static int sc_writev_all_raw(int fd, sc_iov_cursor *cur, double deadline) {
    return sc_write_loop(fd, cur, deadline, 0);
}

/* Writes never raise SIGPIPE. A pipe has no MSG_NOSIGNAL (send(2)'s flag), and a process that set
   SIGPIPE back to SIG_DFL would die on a write to a peer that is gone: the writing thread blocks
   the signal around the write (the mask is per thread, other threads are untouched), and after
   EPIPE takes the SIGPIPE that write queued for it (sigtimedwait with a zero timeout) before it
   unblocks, so the caller gets -EPIPE and nothing else. A thread that blocked SIGPIPE itself is
   left as it is. */
typedef struct {
    sigset_t old;
    int guarded; /* 1: this call blocked SIGPIPE and must unblock it */
} sc_sigpipe_guard;

static void sc_sigpipe_block(sc_sigpipe_guard *g) {
    sigset_t pipe_set;
    sigemptyset(&pipe_set);
    sigaddset(&pipe_set, SIGPIPE);
    g->guarded = pthread_sigmask(SIG_BLOCK, &pipe_set, &g->old) == 0 && !sigismember(&g->old, SIGPIPE);
}

static void sc_sigpipe_restore(sc_sigpipe_guard *g, int rc) {
    if (!g->guarded) return;
    if (rc == -EPIPE) {
        sigset_t pipe_set;
        sigemptyset(&pipe_set);
        sigaddset(&pipe_set, SIGPIPE);
        const struct timespec zero = {0, 0};
        int r;
        do {
            r = sigtimedwait(&pipe_set, NULL, &zero);
        } while (r < 0 && errno == EINTR);
    }
    pthread_sigmask(SIG_SETMASK, &g->old, NULL);
}

int sc_writev_all(int fd, sc_iov_cursor *cur, double deadline) {
    sc_sigpipe_guard g;
    sc_sigpipe_block(&g);
    int rc = sc_writev_all_raw(fd, cur, deadline);
    sc_sigpipe_restore(&g, rc);
    return rc;
}

static unsigned long long sc_spliced_total = 0;

/* SPRINT_CONTROL_SPLICE=0 turns vmsplice off (every frame is copied by writev). */
static volatile int sc_splice_on = -1;

static int sc_splice_enabled(void) {
    int e = sc_splice_on;
    if (e < 0) {
        const char *s = getenv("SPRINT_CONTROL_SPLICE");
        e = !(s && s[0] == '0' && s[1] == '\0');
        sc_splice_on = e;
    }
    return e;
}

unsigned long long sc_spliced_bytes(void) { return __atomic_load_n(&sc_spliced_total, __ATOMIC_RELAXED); }

/* Transfers the first `limit` bytes the cursor describes (fewer if it ends first), splicing or
   copying, by running a cursor truncated at that point over the same entries. */
static int sc_write_part(int fd, sc_iov_cursor *cur, size_t limit, double deadline, int splice) {
    int k = cur->index;
    size_t acc = 0;
    while (k < cur->count && acc + cur->iov[k].iov_len <= limit) acc += cur->iov[k++].iov_len;
    size_t part = 0, rest = 0;
    char *base0 = NULL;
    if (k < cur->count && acc < limit) { /* entry k is split: `part` bytes now, `rest` later */
        part = limit - acc;
        rest = cur->iov[k].iov_len - part;
        base0 = (char *)cur->iov[k].iov_base;
        cur->iov[k].iov_len = part;
        k++;
    }
    sc_iov_cursor sub = {cur->iov, k, cur->index, 0};
    int rc = sc_write_loop(fd, &sub, deadline, splice);
    cur->done += sub.done;
    cur->index = sub.index;
    if (part) { /* give the split entry back what stays for later, also after an error (EINTR) */
        struct iovec *v = &cur->iov[k - 1];
        if (sub.index >= k) {
            v->iov_base = base0 + part;
            v->iov_len = rest;
            cur->index = k - 1;
        } else {
            v->iov_len += rest;
        }
    }
    return rc;
}

static int sc_write_frame_all_raw(int fd, sc_iov_cursor *cur, int payload_index, double deadline) {
#if defined(F_GETPIPE_SZ) && defined(SPLICE_F_MOVE) && defined(FIONREAD)
    size_t payload = 0;
    for (int i = payload_index; i < cur->count; i++) payload += cur->iov[i].iov_len;
    if (payload < 2 * SC_SPLICE_MIN || !sc_splice_enabled()) return sc_writev_all_raw(fd, cur, deadline);
    int pipe_size = fcntl(fd, F_GETPIPE_SZ);
    if (pipe_size <= 0 || payload < (size_t)pipe_size + SC_SPLICE_MIN || cur->index > payload_index ||
        !sc_splice_enabled())
        return sc_writev_all_raw(fd, cur, deadline);
    /* The copied tail is one page more than the pipe holds, so it always fills every slot. */
    size_t tail = (size_t)pipe_size + (size_t)sysconf(_SC_PAGESIZE);
    size_t head = 0;
    for (int i = cur->index; i < payload_index; i++) head += cur->iov[i].iov_len;
    int rc = sc_write_part(fd, cur, head, deadline, 0); /* header, name: copied (they live on the stack) */
    if (rc < 0) return rc;
    size_t spliced = payload - tail;
    size_t before = cur->done;
    rc = sc_write_part(fd, cur, spliced, deadline, 1);
    if (rc == -EINVAL || rc == -ENOSYS || rc == -EOPNOTSUPP) {
        if (cur->done != before) return rc; /* cannot happen: the first call fails, or none does */
    } else if (rc < 0) {
        return rc;
    } else {
        __atomic_add_fetch(&sc_spliced_total, (unsigned long long)spliced, __ATOMIC_RELAXED);
    }
    rc = sc_writev_all_raw(fd, cur, deadline);
    if (rc < 0) return rc;
    /* A pipe grown by the peer during this frame could still hold spliced pages: wait them out. */
    for (;;) {
        int queued = 0;
        if (ioctl(fd, FIONREAD, &queued) < 0 || (size_t)queued <= tail) return 0;
        if (deadline >= 0 && sc_monotonic() >= deadline) return -ETIMEDOUT;
        struct timespec ts = {0, 20000};
        nanosleep(&ts, NULL);
    }
#else
    (void)payload_index;
    return sc_writev_all_raw(fd, cur, deadline);
#endif
}

int sc_write_frame_all(int fd, sc_iov_cursor *cur, int payload_index, double deadline) {
    sc_sigpipe_guard g;
    sc_sigpipe_block(&g);
    int rc = sc_write_frame_all_raw(fd, cur, payload_index, deadline);
    sc_sigpipe_restore(&g, rc);
    return rc;
}

static inline void sc_relax(void) {
    if (sc_spin_yield) {
        sched_yield();
    } else {
#if defined(__x86_64__) || defined(__i386__)
        for (int i = 0; i < 64; i++) __builtin_ia32_pause();
#endif
    }
}

void sc_set_tuning(long spin_us, int splice, int yield) {
    if (yield >= 0) sc_spin_yield = yield != 0;
    if (spin_us >= 0) sc_spin_budget = (double)spin_us * 1e-6;
    if (splice >= 0) sc_splice_on = splice != 0;
}

int sc_readv_all(int fd, sc_iov_cursor *cur, double deadline) {
    while (cur->index < cur->count && cur->iov[cur->index].iov_len == 0) cur->index++;
    while (cur->index < cur->count) {
        int n = cur->count - cur->index;
        if (n > IOV_MAX) n = IOV_MAX;
        ssize_t r = sc_step(fd, cur->iov + cur->index, n, 0, 0, deadline);
        if (r == -EAGAIN) continue;
        if (r < 0) return (int)r;
        if (r == 0) return 1; /* EOF */
        sc_advance(cur, (size_t)r);
    }
    return 0;
}

int sc_grow_pipe(int fd, int wanted) {
#ifdef F_SETPIPE_SZ
    if (wanted <= 0) {
        FILE *f = fopen("/proc/sys/fs/pipe-max-size", "r");
        if (!f) return -1;
        if (fscanf(f, "%d", &wanted) != 1) wanted = -1;
        fclose(f);
        if (wanted <= 0) return -1;
    }
    int cur = fcntl(fd, F_GETPIPE_SZ);
    if (cur >= wanted) return cur;
    int rc = fcntl(fd, F_SETPIPE_SZ, wanted);
    if (rc < 0) return -1;
    return rc;
#else
    (void)fd;
    (void)wanted;
    return -1;
#endif
}
