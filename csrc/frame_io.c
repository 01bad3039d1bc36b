/* frame_io.c -- see frame_io.h. */
#define _GNU_SOURCE
#include "frame_io.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

#ifndef IOV_MAX
#define IOV_MAX 1024
#endif

double sc_monotonic(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Waits until fd is ready for `events` or the deadline passes. */
static int sc_wait(int fd, short events, double deadline) {
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

int sc_writev_all(int fd, sc_iov_cursor *cur, double deadline) {
    while (cur->index < cur->count && cur->iov[cur->index].iov_len == 0) cur->index++;
    while (cur->index < cur->count) {
        int rc = sc_wait(fd, POLLOUT, deadline);
        if (rc < 0) return rc;
        int n = cur->count - cur->index;
        if (n > IOV_MAX) n = IOV_MAX;
        ssize_t w = writev(fd, cur->iov + cur->index, n);
        if (w < 0) {
            if (errno == EAGAIN) { /* non-blocking fd: wait for room instead of spinning */
                struct pollfd p = {fd, POLLOUT, 0};
                if (deadline < 0 && poll(&p, 1, -1) < 0) return -errno;
                continue;
            }
            return -errno;
        }
        sc_advance(cur, (size_t)w);
    }
    return 0;
}

int sc_readv_all(int fd, sc_iov_cursor *cur, double deadline) {
    while (cur->index < cur->count && cur->iov[cur->index].iov_len == 0) cur->index++;
    while (cur->index < cur->count) {
        int rc = sc_wait(fd, POLLIN, deadline);
        if (rc < 0) return rc;
        int n = cur->count - cur->index;
        if (n > IOV_MAX) n = IOV_MAX;
        ssize_t r = readv(fd, cur->iov + cur->index, n);
        if (r < 0) {
            if (errno == EAGAIN) { /* non-blocking fd: wait for data instead of spinning */
                struct pollfd p = {fd, POLLIN, 0};
                if (deadline < 0 && poll(&p, 1, -1) < 0) return -errno;
                continue;
            }
            return -errno;
        }
        if (r == 0) return 1;
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
