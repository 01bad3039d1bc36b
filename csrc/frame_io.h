/*
 * frame_io.h -- blocking scatter/gather I/O on pipes, written to run without the GIL.
 *
 * The functions never call into Python. They return 0 when done, or a negative errno:
 * -EINTR means "a signal arrived, run the Python signal handlers and call again" (the cursor
 * keeps its position), -ETIMEDOUT means the deadline passed. Reads return 1 on EOF.
 */
#ifndef SPRINT_CONTROL_FRAME_IO_H
#define SPRINT_CONTROL_FRAME_IO_H

#include <stddef.h>
#include <sys/uio.h>

typedef struct {
    struct iovec *iov; /* caller-owned; entries are consumed (advanced) in place */
    int count;         /* number of entries */
    int index;         /* first entry not yet fully transferred */
    size_t done;       /* bytes transferred so far, over all entries */
} sc_iov_cursor;

/* Monotonic clock in seconds, for deadlines. */
double sc_monotonic(void);

/* Writes every byte the cursor describes. deadline < 0: wait forever. */
int sc_writev_all(int fd, sc_iov_cursor *cur, double deadline);

/* Fills every byte the cursor describes; returns 1 on EOF before that (cur->done tells how far). */
int sc_readv_all(int fd, sc_iov_cursor *cur, double deadline);

/* Raises the pipe buffer of fd to the system maximum; returns the new size, or -1 (left as is). */
int sc_grow_pipe(int fd, int wanted);

#endif
