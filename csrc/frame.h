/*
 * frame.h -- the wire layout of sprint_control's protocol version 2, and the checks every
 * receiver applies before it touches a byte of payload.
 *
 * One frame = a fixed 64-byte header, the segment name, zero padding, the raw array bytes:
 *
 *   offset  size  field        meaning
 *   ------  ----  -----------  -------------------------------------------------------------
 *        0     4  magic        "SCF2" (0x53 0x43 0x46 0x32)
 *        4     1  version      2
 *        5     1  type         SC_MSG_* below
 *        6     1  dtype        SC_DTYPE_* below (0 = no array)
 *        7     1  ndim         0..3 (unused shape entries must be 0)
 *        8     4  flags        uint32, SC_FLAG_* below; unknown bits are rejected
 *       12     4  name_len     uint32, bytes of UTF-8 name that follow the header
 *       16     8  payload_len  uint64, bytes of array payload; == prod(shape) * itemsize
 *       24     8  value        float64 (the loss; the number of FSA states; else 0)
 *       32     8  seq          uint64, sender's running message number (diagnostics, shm slots)
 *       40    24  shape[3]     uint64 each, C order, row-major
 *       64     n  name         name_len bytes, UTF-8, not NUL-terminated
 *     64+n     p  padding      zero bytes up to the next multiple of 8
 *   64+n+p     L  payload      payload_len bytes, the array in C order, little-endian
 *
 * All integers and floats are little-endian; this header only builds on little-endian hosts
 * (x86-64, aarch64, ppc64le), where the struct below is the wire image as it is.
 */
#ifndef SPRINT_CONTROL_FRAME_H
#define SPRINT_CONTROL_FRAME_H

#include <stddef.h>
#include <stdint.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "sprint_control's compiled core needs a little-endian host; build with SPRINT_CONTROL_PURE_PYTHON=1"
#endif

#define SC_MAGIC0 'S'
#define SC_MAGIC1 'C'
#define SC_MAGIC2 'F'
#define SC_MAGIC3 '2'
#define SC_VERSION 2
#define SC_HEADER_SIZE 64
#define SC_MAX_NDIM 3

/* Message types. p->c: parent to child, c->p: child to parent. */
enum {
    SC_MSG_LOSS_REQUEST = 1, /* p->c  name=segment, array=(time,label) float32 log-posteriors     */
    SC_MSG_LOSS_RESULT = 2,  /* c->p  name=segment, value=loss, array=(time,label) error signal     */
    SC_MSG_FSA_REQUEST = 3,  /* p->c  name=segment                                                 */
    SC_MSG_FSA_RESULT = 4,   /* c->p  value=num_states, uint32 (4,E): from, to, emission, weight bits */
    SC_MSG_CONTROL = 5,      /* both  uint8 payload: a tuple through the safe pickle reader          */
    SC_MSG_ERROR = 6,        /* c->p  name=exception type, uint8 payload: UTF-8 traceback text       */
    SC_MSG_EXIT = 7,         /* p->c  no name, no payload                                            */
    SC_MSG_MAX = 7
};

/* Array element types. */
enum {
    SC_DTYPE_NONE = 0,
    SC_DTYPE_FLOAT32 = 1,
    SC_DTYPE_UINT32 = 2,
    SC_DTYPE_FLOAT64 = 3,
    SC_DTYPE_INT32 = 4,
    SC_DTYPE_UINT8 = 5,
    SC_DTYPE_UINT64 = 6, /* shared-memory descriptors */
    SC_DTYPE_MAX = 6
};

/* Flags. */
#define SC_FLAG_SKIPPED 0x1u /* LOSS_RESULT: the criterion discarded the segment (loss inf, zeros) */
#define SC_FLAG_SHM 0x2u     /* LOSS_*: the array is a uint64 (8,) shared-memory descriptor (shm.py) */
#define SC_FLAG_KNOWN 0x3u

/* Header check results; the Python side turns each into one ProtocolError message. */
enum {
    SC_OK = 0,
    SC_ERR_MAGIC = 1,
    SC_ERR_VERSION = 2,
    SC_ERR_TYPE = 3,
    SC_ERR_DTYPE = 4,
    SC_ERR_NDIM = 5,
    SC_ERR_FLAGS = 6,
    SC_ERR_NAME_TOO_LONG = 7,
    SC_ERR_PAYLOAD_TOO_LARGE = 8,
    SC_ERR_SHAPE_UNUSED = 9,
    SC_ERR_PAYLOAD_MISMATCH = 10,
    SC_ERR_NO_ARRAY = 11,
    SC_ERR_DIM_TOO_LARGE = 12
};

#pragma pack(push, 1)
typedef struct {
    char magic[4];
    uint8_t version;
    uint8_t type;
    uint8_t dtype;
    uint8_t ndim;
    uint32_t flags;
    uint32_t name_len;
    uint64_t payload_len;
    double value;
    uint64_t seq;
    uint64_t shape[SC_MAX_NDIM];
} sc_frame_header;
#pragma pack(pop)

typedef char sc_header_size_is_64[(sizeof(sc_frame_header) == SC_HEADER_SIZE) ? 1 : -1];

static inline size_t sc_dtype_itemsize(uint8_t dtype) {
    switch (dtype) {
    case SC_DTYPE_FLOAT32: case SC_DTYPE_UINT32: case SC_DTYPE_INT32: return 4;
    case SC_DTYPE_FLOAT64: case SC_DTYPE_UINT64: return 8;
    case SC_DTYPE_UINT8: return 1;
    default: return 0;
    }
}

/* Bytes of zero padding after a name of name_len bytes, so the payload starts 8-aligned. */
static inline size_t sc_name_padding(uint32_t name_len) { return (size_t)((8u - (name_len & 7u)) & 7u); }

/*
 * Validates a received header before anything is allocated. Checks run in this order and the
 * first failure is returned (the pure-Python twin checks in the same order).
 */
static inline int sc_header_check(const sc_frame_header *h, uint64_t max_payload, uint32_t max_name) {
    if (h->magic[0] != SC_MAGIC0 || h->magic[1] != SC_MAGIC1 || h->magic[2] != SC_MAGIC2 || h->magic[3] != SC_MAGIC3)
        return SC_ERR_MAGIC;
    if (h->version != SC_VERSION) return SC_ERR_VERSION;
    if (h->type < 1 || h->type > SC_MSG_MAX) return SC_ERR_TYPE;
    if (h->dtype > SC_DTYPE_MAX) return SC_ERR_DTYPE;
    if (h->ndim > SC_MAX_NDIM) return SC_ERR_NDIM;
    if (h->flags & ~SC_FLAG_KNOWN) return SC_ERR_FLAGS;
    if (h->name_len > max_name) return SC_ERR_NAME_TOO_LONG;
    if (h->payload_len > max_payload) return SC_ERR_PAYLOAD_TOO_LARGE;
    for (int i = h->ndim; i < SC_MAX_NDIM; i++)
        if (h->shape[i] != 0) return SC_ERR_SHAPE_UNUSED;
    /* No side may exceed the payload limit, even of an empty array (a (0, 2**63) shape would
       overflow the receiver's signed dimensions). */
    for (int i = 0; i < h->ndim; i++)
        if (h->shape[i] > max_payload) return SC_ERR_DIM_TOO_LARGE;
    if (h->dtype == SC_DTYPE_NONE) {
        if (h->ndim != 0 || h->payload_len != 0) return SC_ERR_NO_ARRAY;
        return SC_OK;
    }
    /* prod(shape) * itemsize must equal payload_len; computed without overflow, since a
       lying header may claim shapes whose product wraps around. */
    uint64_t n = sc_dtype_itemsize(h->dtype);
    for (int i = 0; i < h->ndim; i++)
        if (h->shape[i] == 0) n = 0; /* an empty array: no payload, whatever the other sides */
    for (int i = 0; i < h->ndim && n != 0; i++) {
        uint64_t d = h->shape[i];
        if (n > h->payload_len / d) return SC_ERR_PAYLOAD_MISMATCH; /* would exceed (or wrap) */
        n *= d;
    }
    if (n != h->payload_len) return SC_ERR_PAYLOAD_MISMATCH;
    return SC_OK;
}

#endif /* SPRINT_CONTROL_FRAME_H */
