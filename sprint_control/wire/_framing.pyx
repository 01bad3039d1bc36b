# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The framing core of protocol v2, compiled: the per-segment hot path of sprint_control.

A frame goes out as one ``writev`` of [header, name, padding, array memory] and comes in as
one ``read`` of the header followed by one ``readv`` of [name, padding, destination array];
no pickle, no intermediate bytes object, the GIL released around every blocking call.
The wire layout is documented in ``csrc/frame.h``; ``_framing_py.py`` is the pure-Python twin
with the same API, errors and behaviour.
"""

import os

import numpy as np

cimport numpy as cnp
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from cpython.exc cimport PyErr_CheckSignals
from cpython.unicode cimport PyUnicode_DecodeUTF8
from libc.errno cimport EINTR
from libc.stdint cimport uint8_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy, memset

from . import constants as w
from ..errors import ProtocolError, SprintTimeoutError, TruncatedFrameError

cnp.import_array()

cdef extern from "<sys/uio.h>":
    struct iovec:
        void *iov_base
        size_t iov_len

cdef extern from "<errno.h>":
    int ETIMEDOUT

cdef extern from "frame.h":
    # Every number of the wire layout comes from the header, so the core cannot drift from it;
    # WIRE_CONSTANTS below exposes them for the test that holds the twin's constants.py to them.
    char SC_MAGIC0, SC_MAGIC1, SC_MAGIC2, SC_MAGIC3
    enum:
        SC_VERSION
        SC_HEADER_SIZE
        SC_MAX_NDIM
    enum:
        SC_MSG_LOSS_REQUEST
        SC_MSG_LOSS_RESULT
        SC_MSG_FSA_REQUEST
        SC_MSG_FSA_RESULT
        SC_MSG_CONTROL
        SC_MSG_ERROR
        SC_MSG_EXIT
        SC_MSG_MAX
    enum:
        SC_DTYPE_NONE
        SC_DTYPE_FLOAT32
        SC_DTYPE_UINT32
        SC_DTYPE_FLOAT64
        SC_DTYPE_INT32
        SC_DTYPE_UINT8
        SC_DTYPE_UINT64
        SC_DTYPE_MAX
    unsigned int SC_FLAG_SKIPPED, SC_FLAG_SHM, SC_FLAG_KNOWN
    enum:
        SC_OK
        SC_ERR_MAGIC
        SC_ERR_VERSION
        SC_ERR_TYPE
        SC_ERR_DTYPE
        SC_ERR_NDIM
        SC_ERR_FLAGS
        SC_ERR_NAME_TOO_LONG
        SC_ERR_PAYLOAD_TOO_LARGE
        SC_ERR_SHAPE_UNUSED
        SC_ERR_PAYLOAD_MISMATCH
        SC_ERR_NO_ARRAY
        SC_ERR_DIM_TOO_LARGE
    ctypedef struct sc_frame_header:
        char magic[4]
        uint8_t version
        uint8_t type
        uint8_t dtype
        uint8_t ndim
        uint32_t flags
        uint32_t name_len
        uint64_t payload_len
        double value
        uint64_t seq
        uint64_t shape[SC_MAX_NDIM]
    int sc_header_check(const sc_frame_header *h, uint64_t max_payload, uint32_t max_name) nogil
    size_t sc_name_padding(uint32_t name_len) nogil

cdef extern from "frame_io.h":
    ctypedef struct sc_iov_cursor:
        iovec *iov
        int count
        int index
        size_t done
    double sc_monotonic() nogil
    int sc_writev_all(int fd, sc_iov_cursor *cur, double deadline) nogil
    int sc_write_frame_all(int fd, sc_iov_cursor *cur, int payload_index, double deadline) nogil
    unsigned long long sc_spliced_bytes() nogil
    void sc_set_tuning(long spin_us, int splice, int yield_) nogil
    int sc_readv_all(int fd, sc_iov_cursor *cur, double deadline) nogil
    int sc_grow_pipe(int fd, int wanted) nogil

IMPLEMENTATION = "cython"

#: Counters of the framing layer (conversions: arrays that had to be copied before sending).
stats = {"conversions": 0}

#: The wire constants as the compiled core sees them in csrc/frame.h, under the names of
#: wire/constants.py (the twin's definition); tests/wire/test_constants.py compares the two.
WIRE_CONSTANTS = {
    "MAGIC": bytes([SC_MAGIC0, SC_MAGIC1, SC_MAGIC2, SC_MAGIC3]),
    "VERSION": SC_VERSION,
    "HEADER_SIZE": SC_HEADER_SIZE,
    "MAX_NDIM": SC_MAX_NDIM,
    "MSG_LOSS_REQUEST": SC_MSG_LOSS_REQUEST,
    "MSG_LOSS_RESULT": SC_MSG_LOSS_RESULT,
    "MSG_FSA_REQUEST": SC_MSG_FSA_REQUEST,
    "MSG_FSA_RESULT": SC_MSG_FSA_RESULT,
    "MSG_CONTROL": SC_MSG_CONTROL,
    "MSG_ERROR": SC_MSG_ERROR,
    "MSG_EXIT": SC_MSG_EXIT,
    "MSG_MAX": SC_MSG_MAX,
    "DTYPE_NONE": SC_DTYPE_NONE,
    "DTYPE_FLOAT32": SC_DTYPE_FLOAT32,
    "DTYPE_UINT32": SC_DTYPE_UINT32,
    "DTYPE_FLOAT64": SC_DTYPE_FLOAT64,
    "DTYPE_INT32": SC_DTYPE_INT32,
    "DTYPE_UINT8": SC_DTYPE_UINT8,
    "DTYPE_UINT64": SC_DTYPE_UINT64,
    "DTYPE_MAX": SC_DTYPE_MAX,
    "FLAG_SKIPPED": SC_FLAG_SKIPPED,
    "FLAG_SHM": SC_FLAG_SHM,
    "KNOWN_FLAGS": SC_FLAG_KNOWN,
    "OK": SC_OK,
    "ERR_MAGIC": SC_ERR_MAGIC,
    "ERR_VERSION": SC_ERR_VERSION,
    "ERR_TYPE": SC_ERR_TYPE,
    "ERR_DTYPE": SC_ERR_DTYPE,
    "ERR_NDIM": SC_ERR_NDIM,
    "ERR_FLAGS": SC_ERR_FLAGS,
    "ERR_NAME_TOO_LONG": SC_ERR_NAME_TOO_LONG,
    "ERR_PAYLOAD_TOO_LARGE": SC_ERR_PAYLOAD_TOO_LARGE,
    "ERR_SHAPE_UNUSED": SC_ERR_SHAPE_UNUSED,
    "ERR_PAYLOAD_MISMATCH": SC_ERR_PAYLOAD_MISMATCH,
    "ERR_NO_ARRAY": SC_ERR_NO_ARRAY,
    "ERR_DIM_TOO_LARGE": SC_ERR_DIM_TOO_LARGE,
}

# iovecs on the stack before write_frame/_read_body fall back to malloc (row-strided matrices)
cdef enum:
    STACK_IOVS = 64

# the padding after a name is at most 7 bytes (sc_name_padding)
cdef char ZERO_PAD[8]
memset(ZERO_PAD, 0, 8)
cdef char SCRATCH_PAD[8]

cdef object _DTYPE_OF_CODE = w.DTYPE_CODES
cdef object _FrameHeader = w.FrameHeader
# tuple.__new__(FrameHeader, fields) builds the named tuple without its Python-level __new__
cdef object _tuple_new = tuple.__new__


cdef str _decode_name(const char *buf, Py_ssize_t n):
    """The segment name; invalid UTF-8 raises the same ProtocolError as the twin (via wire.constants)."""
    if n == 0:
        return ""
    try:
        return PyUnicode_DecodeUTF8(buf, n, NULL)
    except UnicodeDecodeError:
        return w.decode_name(PyBytes_FromStringAndSize(buf, n))


cdef inline int _code_of(cnp.ndarray arr) except -1:
    """Wire dtype code of a native-order array; -2 when it needs a byte-order conversion."""
    cdef int t = cnp.PyArray_TYPE(arr)
    cdef int code
    if t == cnp.NPY_FLOAT32:
        code = SC_DTYPE_FLOAT32
    elif t == cnp.NPY_UINT32:
        code = SC_DTYPE_UINT32
    elif t == cnp.NPY_FLOAT64:
        code = SC_DTYPE_FLOAT64
    elif t == cnp.NPY_INT32:
        code = SC_DTYPE_INT32
    elif t == cnp.NPY_UINT8:
        code = SC_DTYPE_UINT8
    elif t == cnp.NPY_UINT64:
        code = SC_DTYPE_UINT64
    else:
        return w.wire_dtype_code(arr.dtype)  # raises TypeError for dtypes we cannot frame
    if not cnp.PyArray_ISNOTSWAPPED(arr):
        return -2
    return code


cdef inline int _typenum_of(int code):
    if code == SC_DTYPE_FLOAT32:
        return cnp.NPY_FLOAT32
    if code == SC_DTYPE_UINT32:
        return cnp.NPY_UINT32
    if code == SC_DTYPE_FLOAT64:
        return cnp.NPY_FLOAT64
    if code == SC_DTYPE_INT32:
        return cnp.NPY_INT32
    if code == SC_DTYPE_UINT64:
        return cnp.NPY_UINT64
    return cnp.NPY_UINT8


cdef double _deadline(timeout) except? -2.0:
    if timeout is None:
        return -1.0
    return sc_monotonic() + <double>timeout


cdef inline void _start(sc_iov_cursor *cur, iovec *iov, int count) noexcept nogil:
    """Points the cursor at the first of ``count`` iovecs, nothing moved yet."""
    cur.iov = iov
    cur.count = count
    cur.index = 0
    cur.done = 0


cdef int _transfer(int fd, sc_iov_cursor *cur, double deadline, bint writing, int payload_index=-1) except -1:
    """Runs the cursor to the end without the GIL; 0 when done, 1 on EOF (reads).

    A write with ``payload_index`` >= 0 is a frame whose entries from there on are the payload:
    large payloads then go by vmsplice (see sc_write_frame_all in csrc/frame_io.h)."""
    cdef int rc
    while True:
        with nogil:
            if writing and payload_index >= 0:
                rc = sc_write_frame_all(fd, cur, payload_index, deadline)
            elif writing:
                rc = sc_writev_all(fd, cur, deadline)
            else:
                rc = sc_readv_all(fd, cur, deadline)
        if rc == -EINTR:
            PyErr_CheckSignals()  # a handler that raises (KeyboardInterrupt) ends the transfer
            continue
        if rc == -ETIMEDOUT:
            raise SprintTimeoutError("timed out waiting on the pipe")
        if rc < 0:
            raise OSError(-rc, os.strerror(-rc))
        return rc


cdef cnp.ndarray _prepare_send(object array, int *code, int *rows):
    """Returns the array to send; sets its wire code and, for a row-strided matrix, the row count
    (0: the array is C-contiguous and goes as one buffer)."""
    cdef cnp.ndarray arr
    if isinstance(array, np.ndarray):
        arr = <cnp.ndarray>array
    else:
        arr = np.asarray(array)
    if cnp.PyArray_NDIM(arr) > SC_MAX_NDIM:
        raise ValueError(f"arrays with {arr.ndim} dimensions cannot be framed: at most {SC_MAX_NDIM}")
    code[0] = _code_of(arr)
    if code[0] == -2:
        arr = arr.astype(arr.dtype.newbyteorder("="))
        stats["conversions"] += 1
        code[0] = _code_of(arr)
    rows[0] = 0
    if cnp.PyArray_IS_C_CONTIGUOUS(arr):
        return arr
    if (cnp.PyArray_NDIM(arr) == 2 and cnp.PyArray_STRIDE(arr, 1) == cnp.PyArray_ITEMSIZE(arr)
            and cnp.PyArray_DIM(arr, 0) > 0):
        rows[0] = <int>cnp.PyArray_DIM(arr, 0)
        return arr
    arr = np.ascontiguousarray(arr)
    stats["conversions"] += 1
    return arr


cdef int _array_iovs(cnp.ndarray arr, int rows, iovec *iov):
    """Points ``iov`` at the array's bytes: one entry for a C-contiguous array (``rows`` 0), else one
    per row of a row-strided matrix. Returns the number of entries written."""
    cdef char *data = <char *>cnp.PyArray_DATA(arr)
    cdef Py_ssize_t stride0, rowbytes
    cdef int i
    if rows == 0:
        iov[0].iov_base = data
        iov[0].iov_len = <size_t>cnp.PyArray_NBYTES(arr)
        return 1
    stride0 = cnp.PyArray_STRIDE(arr, 0)
    rowbytes = cnp.PyArray_DIM(arr, 1) * cnp.PyArray_ITEMSIZE(arr)
    for i in range(rows):
        iov[i].iov_base = data + i * stride0
        iov[i].iov_len = <size_t>rowbytes
    return rows


cdef void _fill_header(sc_frame_header *h, int msg_type, Py_ssize_t name_len, cnp.ndarray arr, int code,
                       double value, uint64_t seq, uint32_t flags):
    cdef int i
    memset(h, 0, SC_HEADER_SIZE)
    h.magic[0] = SC_MAGIC0
    h.magic[1] = SC_MAGIC1
    h.magic[2] = SC_MAGIC2
    h.magic[3] = SC_MAGIC3
    h.version = SC_VERSION
    h.type = <uint8_t>msg_type
    h.flags = flags
    h.name_len = <uint32_t>name_len
    h.value = value
    h.seq = seq
    if arr is not None:
        h.dtype = <uint8_t>code
        h.ndim = <uint8_t>cnp.PyArray_NDIM(arr)
        for i in range(h.ndim):
            h.shape[i] = <uint64_t>cnp.PyArray_DIM(arr, i)
        h.payload_len = <uint64_t>cnp.PyArray_NBYTES(arr)


cdef bytes _name_bytes(name):
    if type(name) is str:
        return (<str>name).encode("utf-8")
    return w.encode_name(name)


def write_frame(int fd, int msg_type, name="", array=None, double value=0.0, uint64_t seq=0,
                uint32_t flags=0, timeout=None):
    """Writes one frame to ``fd`` with writev, straight from the array's memory; returns bytes written.

    A matrix whose rows are contiguous but not adjacent (one sequence of a (time, batch, label)
    batch) goes out as one iovec per row; other non-contiguous or byte-swapped arrays are copied
    once and counted in ``stats["conversions"]``.
    """
    cdef bytes name_b = _name_bytes(name)
    cdef Py_ssize_t name_len = len(name_b)
    cdef cnp.ndarray arr = None
    cdef int code = 0, rows = 0, n_iov
    cdef sc_frame_header h
    cdef iovec stack_iov[STACK_IOVS]
    cdef iovec *iov = stack_iov
    cdef sc_iov_cursor cur
    cdef double deadline = _deadline(timeout)
    if name_len > 0xFFFFFFFF:
        raise ValueError("segment name too long")
    if array is not None:
        arr = _prepare_send(array, &code, &rows)
    _fill_header(&h, msg_type, name_len, arr, code, value, seq, flags)
    n_iov = 3 + (rows if rows > 0 else 1)
    if n_iov > STACK_IOVS:
        iov = <iovec *>malloc(n_iov * sizeof(iovec))
        if iov == NULL:
            raise MemoryError()
    try:
        iov[0].iov_base = &h
        iov[0].iov_len = SC_HEADER_SIZE
        iov[1].iov_base = PyBytes_AS_STRING(name_b)
        iov[1].iov_len = name_len
        iov[2].iov_base = ZERO_PAD
        iov[2].iov_len = sc_name_padding(<uint32_t>name_len)
        n_iov = 3
        if arr is not None:
            n_iov += _array_iovs(arr, rows, iov + 3)
        _start(&cur, iov, n_iov)
        _transfer(fd, &cur, deadline, True, 3)
        return <Py_ssize_t>cur.done
    finally:
        if iov != stack_iov:
            free(iov)


def encode_frame(int msg_type, name="", array=None, double value=0.0, uint64_t seq=0, uint32_t flags=0):
    """The whole frame as bytes (for tests, fixtures and in-memory use; the pipe path is write_frame)."""
    cdef bytes name_b = _name_bytes(name)
    cdef Py_ssize_t name_len = len(name_b), pad, total, i, rowbytes
    cdef cnp.ndarray arr = None
    cdef int code = 0, rows = 0
    cdef sc_frame_header h
    cdef char *out
    cdef char *src
    if array is not None:
        arr = _prepare_send(array, &code, &rows)
    _fill_header(&h, msg_type, name_len, arr, code, value, seq, flags)
    pad = sc_name_padding(<uint32_t>name_len)
    total = SC_HEADER_SIZE + name_len + pad + <Py_ssize_t>h.payload_len
    result = PyBytes_FromStringAndSize(NULL, total)
    out = PyBytes_AS_STRING(result)
    memcpy(out, &h, SC_HEADER_SIZE)
    memcpy(out + SC_HEADER_SIZE, PyBytes_AS_STRING(name_b), name_len)
    memset(out + SC_HEADER_SIZE + name_len, 0, pad)
    out += SC_HEADER_SIZE + name_len + pad
    if arr is not None:
        src = <char *>cnp.PyArray_DATA(arr)
        if rows == 0:
            memcpy(out, src, <size_t>h.payload_len)
        else:
            rowbytes = cnp.PyArray_DIM(arr, 1) * cnp.PyArray_ITEMSIZE(arr)
            for i in range(rows):
                memcpy(out + i * rowbytes, src + i * cnp.PyArray_STRIDE(arr, 0), rowbytes)
    return result


cdef tuple _fields(sc_frame_header *h):
    return (PyBytes_FromStringAndSize(h.magic, 4), h.version, h.type, h.dtype, h.ndim, h.flags, h.name_len,
            h.payload_len, h.value, h.seq, h.shape[0], h.shape[1], h.shape[2])


cdef int _check(sc_frame_header *h, uint64_t max_payload, uint32_t max_name) except -1:
    cdef int rc = sc_header_check(h, max_payload, max_name)
    if rc != SC_OK:
        raise w.header_error(rc, _fields(h), max_payload, max_name)
    return 0


cdef tuple _shape_of(sc_frame_header *h):
    if h.ndim == 2:
        return (<Py_ssize_t>h.shape[0], <Py_ssize_t>h.shape[1])
    return tuple([<Py_ssize_t>h.shape[i] for i in range(h.ndim)])


cdef object _make_header(sc_frame_header *h, str name):
    return _tuple_new(_FrameHeader, (h.type, h.flags, name, _DTYPE_OF_CODE.get(h.dtype), _shape_of(h),
                                     h.payload_len, h.value, h.seq))


def decode_frame(buffer, uint64_t max_payload=w.DEFAULT_MAX_PAYLOAD, uint32_t max_name=w.DEFAULT_MAX_NAME):
    """Decodes one whole frame held in memory; returns (FrameHeader, ndarray or None).

    The array is a read-only view of ``buffer``, not a copy.
    """
    cdef const unsigned char[::1] mv = memoryview(buffer).cast("B")
    cdef Py_ssize_t n = mv.shape[0], start, total
    cdef sc_frame_header h
    if n < SC_HEADER_SIZE:
        raise TruncatedFrameError("frame header", SC_HEADER_SIZE, n)
    memcpy(&h, &mv[0], SC_HEADER_SIZE)
    _check(&h, max_payload, max_name)
    start = SC_HEADER_SIZE + h.name_len + sc_name_padding(h.name_len)
    total = start + <Py_ssize_t>h.payload_len
    if n < total:
        raise TruncatedFrameError("frame", total, n)
    if n > total:
        raise ProtocolError(f"{n - total} trailing bytes after a frame of {total} bytes")
    name = w.decode_name(bytes(mv[SC_HEADER_SIZE:SC_HEADER_SIZE + h.name_len]))
    header = _make_header(&h, name)
    if h.dtype == SC_DTYPE_NONE:
        return header, None
    arr = np.frombuffer(memoryview(buffer).cast("B")[start:total], dtype=header.dtype).reshape(header.shape)
    return header, arr


cdef int _read_head(int fd, sc_frame_header *h, uint64_t max_payload, uint32_t max_name,
                    double deadline) except -1:
    cdef iovec v
    cdef sc_iov_cursor cur
    v.iov_base = h
    v.iov_len = SC_HEADER_SIZE
    _start(&cur, &v, 1)
    if _transfer(fd, &cur, deadline, False) == 1:
        if cur.done == 0:
            raise EOFError("pipe closed by the peer (no further frame)")
        raise TruncatedFrameError("frame header", SC_HEADER_SIZE, cur.done)
    _check(h, max_payload, max_name)
    return 0


cdef cnp.ndarray _fresh(sc_frame_header *h):
    cdef cnp.npy_intp dims[SC_MAX_NDIM]
    cdef int i
    for i in range(h.ndim):
        dims[i] = <cnp.npy_intp>h.shape[i]
    return cnp.PyArray_EMPTY(h.ndim, dims, _typenum_of(h.dtype), 0)


cdef int _out_rows(cnp.ndarray out) except -2:
    """0: C-contiguous; >0: that many contiguous rows; raises for other layouts."""
    if not cnp.PyArray_ISWRITEABLE(out):
        raise ValueError("out is read-only")
    if cnp.PyArray_IS_C_CONTIGUOUS(out):
        return 0
    if cnp.PyArray_NDIM(out) == 2 and cnp.PyArray_STRIDE(out, 1) == cnp.PyArray_ITEMSIZE(out):
        return <int>cnp.PyArray_DIM(out, 0)
    raise ValueError(f"out must be C-contiguous or a matrix with contiguous rows, got strides {(<object>out).strides}")


cdef bint _out_fits(sc_frame_header *h, cnp.ndarray out):
    cdef int i
    if h.dtype == SC_DTYPE_NONE or cnp.PyArray_NDIM(out) != h.ndim:
        return False
    if cnp.PyArray_TYPE(out) != _typenum_of(h.dtype) or not cnp.PyArray_ISNOTSWAPPED(out):
        return False
    for i in range(h.ndim):
        if <uint64_t>cnp.PyArray_DIM(out, i) != h.shape[i]:
            return False
    return True


cdef object _mismatch(sc_frame_header *h, cnp.ndarray out):
    return ProtocolError(
        f"received array of shape {_shape_of(h)} and dtype {_DTYPE_OF_CODE.get(h.dtype)},"
        f" expected shape {(<object>out).shape} and dtype {(<object>out).dtype}")


cdef cnp.ndarray _read_body(int fd, sc_frame_header *h, char *name_buf, object out, double deadline):
    """Reads [name, padding, payload] with one readv; into ``out`` when given and fitting.

    Returns the array (None without dtype). A non-fitting ``out`` is reported after the payload
    was drained into a fresh array, so the pipe stays in step.
    """
    cdef cnp.ndarray dest = None
    cdef cnp.ndarray out_arr
    cdef bint mismatch = False
    cdef int rows = 0, n_iov
    cdef iovec stack_iov[STACK_IOVS]
    cdef iovec *iov = stack_iov
    cdef sc_iov_cursor cur
    cdef size_t pad = sc_name_padding(h.name_len), head_len
    if out is not None:
        if not isinstance(out, np.ndarray):
            raise TypeError(f"out must be a numpy.ndarray, got {type(out).__name__}")
        out_arr = <cnp.ndarray>out
        if _out_fits(h, out_arr):
            rows = _out_rows(out_arr)
            dest = out_arr
        elif h.dtype == SC_DTYPE_NONE and cnp.PyArray_SIZE(out_arr) == 0:
            dest = None
        else:
            mismatch = True
    if dest is None and h.dtype != SC_DTYPE_NONE:
        rows = 0
        dest = _fresh(h)
    n_iov = 2 + (rows if rows > 0 else 1)
    if n_iov > STACK_IOVS:
        iov = <iovec *>malloc(n_iov * sizeof(iovec))
        if iov == NULL:
            raise MemoryError()
    try:
        iov[0].iov_base = name_buf
        iov[0].iov_len = h.name_len
        iov[1].iov_base = SCRATCH_PAD
        iov[1].iov_len = pad
        n_iov = 2
        if dest is not None:
            n_iov += _array_iovs(dest, rows, iov + 2)
        _start(&cur, iov, n_iov)
        if _transfer(fd, &cur, deadline, False) == 1:
            head_len = h.name_len + pad
            if cur.done < head_len:
                raise TruncatedFrameError("segment name", h.name_len, min(cur.done, h.name_len))
            raise TruncatedFrameError("payload", h.payload_len, cur.done - head_len)
    finally:
        if iov != stack_iov:
            free(iov)
    if mismatch:
        if h.dtype == SC_DTYPE_NONE:
            raise ProtocolError(f"expected an array of shape {(<object>out).shape}, the frame carries none")
        raise _mismatch(h, <cnp.ndarray>out)
    return dest


def read_frame(int fd, out=None, uint64_t max_payload=w.DEFAULT_MAX_PAYLOAD,
               uint32_t max_name=w.DEFAULT_MAX_NAME, timeout=None):
    """Reads one whole frame; returns (FrameHeader, ndarray or None).

    Raises EOFError when the pipe ends cleanly before the frame, TruncatedFrameError when it ends
    inside it, ProtocolError for a header that breaks the rules (before anything is allocated).
    With ``out``, the payload lands in that array (C-contiguous, or a matrix with contiguous rows).
    """
    cdef sc_frame_header h
    cdef double deadline = _deadline(timeout)
    _read_head(fd, &h, max_payload, max_name, deadline)
    return _read_rest(fd, &h, out, deadline)


cdef tuple _read_rest(int fd, sc_frame_header *h, target, double deadline):
    """Name and payload of the frame whose header ``h`` was read and checked, with one readv (the payload
    into ``target`` where given): (FrameHeader, ndarray or None)."""
    cdef char small[256]
    cdef char *name_buf = small
    if h.name_len > 256:
        name_buf = <char *>malloc(h.name_len)
        if name_buf == NULL:
            raise MemoryError()
    try:
        arr = _read_body(fd, h, name_buf, target, deadline)
        name = _decode_name(name_buf, h.name_len)
    finally:
        if name_buf != small:
            free(name_buf)
    return _make_header(h, name), arr


def read_answer(int fd, out, int msg_type, long long seq, uint64_t max_payload=w.DEFAULT_MAX_PAYLOAD,
                uint32_t max_name=w.DEFAULT_MAX_NAME, timeout=None):
    """Reads one whole frame, the answer to request ``seq``; returns (FrameHeader, ndarray or None).

    The payload lands in ``out`` when the frame is of type ``msg_type``, carries ``seq`` (any, when it
    is negative) and an array of ``out``'s shape and dtype; any other frame's payload goes to a fresh
    array, for the caller to judge (an error frame, an answer to another request). The header stays in
    C until it is returned: name and payload come with one readv after it, as ``read_frame`` reads them.
    """
    cdef sc_frame_header h
    cdef double deadline = _deadline(timeout)
    _read_head(fd, &h, max_payload, max_name, deadline)
    target = None
    if (out is not None and h.type == msg_type and (seq < 0 or h.seq == <uint64_t>seq)
            and isinstance(out, np.ndarray) and _out_fits(&h, <cnp.ndarray>out)):
        target = out
    return _read_rest(fd, &h, target, deadline)


def read_header(int fd, uint64_t max_payload=w.DEFAULT_MAX_PAYLOAD, uint32_t max_name=w.DEFAULT_MAX_NAME,
                timeout=None):
    """Reads and validates a header and the segment name after it; the payload stays in the pipe."""
    cdef sc_frame_header h
    cdef double deadline = _deadline(timeout)
    cdef sc_iov_cursor cur
    cdef iovec v[2]
    _read_head(fd, &h, max_payload, max_name, deadline)
    name_b = PyBytes_FromStringAndSize(NULL, h.name_len)
    v[0].iov_base = PyBytes_AS_STRING(name_b)
    v[0].iov_len = h.name_len
    v[1].iov_base = SCRATCH_PAD
    v[1].iov_len = sc_name_padding(h.name_len)
    _start(&cur, v, 2)
    if _transfer(fd, &cur, deadline, False) == 1:
        raise TruncatedFrameError("segment name", h.name_len, min(cur.done, h.name_len))
    return _make_header(&h, w.decode_name(name_b))


def read_payload(int fd, header, out=None, timeout=None):
    """Reads the payload announced by ``header`` (from read_header) into ``out`` or a fresh array."""
    cdef sc_frame_header h
    cdef int i
    cdef double deadline = _deadline(timeout)
    memset(&h, 0, SC_HEADER_SIZE)
    h.type = header.msg_type
    if header.dtype is not None:
        h.dtype = w.CODE_OF_DTYPE[header.dtype]
        h.ndim = len(header.shape)
        for i in range(h.ndim):
            h.shape[i] = header.shape[i]
        h.payload_len = header.payload_len
    elif out is not None and out.size:
        raise ProtocolError(f"expected an array of shape {out.shape}, the frame carries none")
    else:
        return None
    return _read_body(fd, &h, NULL, out, deadline)


def _spliced_bytes():
    """Payload bytes this process sent by vmsplice so far (diagnostics for tests and benchmarks)."""
    return sc_spliced_bytes()


def _set_tuning(spin_us=None, splice=None, spin_yield=None):
    """Overrides SPRINT_CONTROL_SPIN_US / SPRINT_CONTROL_SPLICE in this process (A/B measurements)."""
    sc_set_tuning(-1 if spin_us is None else <long>spin_us, -1 if splice is None else (1 if splice else 0),
                  -1 if spin_yield is None else (1 if spin_yield else 0))


def grow_pipe(int fd, size=None):
    """Raises fd's pipe buffer to ``size`` (default: /proc/sys/fs/pipe-max-size); returns the new
    size, or None where the OS does not allow it (the pipe is then left as it is)."""
    cdef int rc = sc_grow_pipe(fd, 0 if size is None else <int>size)
    return None if rc < 0 else rc
