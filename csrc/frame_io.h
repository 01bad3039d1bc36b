/*
 * frame_io.h -- blocking scatter/gather I/O on pipes, written to run without the GIL.
 *
 * The functions never call into Python. They return 0 when done, or a negative errno:
 * -EINTR means "a signal arrived, run the Python signal handlers and call again" (the cursor
 * keeps its position), -ETIMEDOUT means the deadline passed. Reads return 1 on EOF. Writes never
 * raise SIGPIPE: a peer that is gone is -EPIPE, whatever the process's SIGPIPE disposition.
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

/*
 * Before a read or write would block, the caller spins briefly (poll with zero timeout, yielding
 * the CPU between tries) for the peer: a request/answer pair on two sleeping processes costs two
 * scheduler wake-ups (tens of microseconds each on virtual machines), a spin costs a few
 * microseconds. SPRINT_CONTROL_SPIN_US sets the budget per wait (default 200, 0 turns it off).
 */

/* Overrides the spin budget (microseconds) and turns vmsplice on/off; -1 keeps a setting. */
void sc_set_tuning(long spin_us, int splice, int yield);

/* Monotonic clock in seconds, for deadlines. */
double sc_monotonic(void);

/* Writes every byte the cursor describes. deadline < 0: wait forever. */
int sc_writev_all(int fd, sc_iov_cursor *cur, double deadline);

/*
 * Like sc_writev_all, for a frame whose entries [payload_index, count) are the payload. On a
 * pipe, a large payload goes by vmsplice (the pipe takes references to the sender's pages: no
 * copy) except its last pipe-buffer's worth of bytes, which are copied by writev. Once that copy
 * is in the pipe, every spliced page has been read by the peer (a FIFO holding at most one buffer
 * of bytes holds none of the spliced ones; checked with FIONREAD before returning), so the caller
 * may reuse or free the memory as after a plain write. Small payloads and non-pipes: sc_writev_all.
 */
int sc_write_frame_all(int fd, sc_iov_cursor *cur, int payload_index, double deadline);

/* Bytes that sc_write_frame_all moved by vmsplice since the process started (diagnostics). */
unsigned long long sc_spliced_bytes(void);

/* Fills every byte the cursor describes; returns 1 on EOF before that (cur->done tells how far). */
int sc_readv_all(int fd, sc_iov_cursor *cur, double deadline);

/* Raises the pipe buffer of fd to the system maximum; returns the new size, or -1 (left as is). */
int sc_grow_pipe(int fd, int wanted);

#endif
