/*
 * sprint_host: a tiny stand-in for RASR's embedding of CPython, to run the Sprint-side module
 * the way RASR does and nothing more.
 *
 *  - Python is started once, then the main thread gives up the GIL (PyEval_SaveThread) and takes
 *    it only around each call into the module (PyGILState_Ensure/Release), like RASR. Threads the
 *    module starts must make progress while this host sits outside Python.
 *  - init() gets a PyCapsule as `reference` and a builtin function (PyCFunction bound to that
 *    capsule) as `callback`, version_number=5; orthographies go to process_segment as bytes.
 *  - Matrices cross as float32 (dim, time) column-major arrays; arrays coming from Python are
 *    copied with one memcpy when they are F-contiguous float32, else converted (counted as slow).
 *  - The criterion is cross-entropy, in C: loss = -sum_t log p(a_t | t), error signal
 *    softmax - onehot, only as "error-signal-before-softmax" (a plain "error-signal" request is a
 *    fatal error, as in RASR). Targets: a_t = (fnv1a32(segment name) + 7 t) mod labels.
 *
 * Flows: A = NnTrainer, iterate-corpus with the python segment order (criterion through the
 * callback in process_segment); B = segment-wise trainer with a PythonLayer (criterion here, error
 * signal through backpropagate).
 *
 * usage: sprint_host --flow=A|B --pymod-path=DIR --pymod-name=NAME --pymod-config=CFG
 *                    --corpus=FILE (lines: name TAB frames TAB orthography) --labels=L
 *                    [--input-dim=D] [--input-in-log-space=true|false] [--idle-us=N]
 * Prints one line per segment on stdout ("segment NAME loss X") and a summary on stderr.
 * Exit status 0 on success, 1 on a fatal error (a Python exception in a call included).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct {
    char *name;
    long frames;
    char *orth;
} Segment;

static Segment *g_corpus = NULL;
static int g_num_segments = 0;
static long g_labels = 0;
static long g_input_dim = 1;
static int g_log_space = 0;
static long g_idle_us = 0;
static long g_fast_in = 0, g_slow_in = 0, g_criterion_calls = 0, g_segments = 0;
static PyObject *g_numpy = NULL;

static void fatal(const char *fmt, ...) {
    va_list ap;
    fflush(stdout);
    fprintf(stderr, "sprint_host: fatal: ");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    fflush(stderr);
    _exit(1);
}

/* GIL held: print the pending Python exception, then stop like RASR's criticalError. */
static void py_fatal(const char *what) {
    if (PyErr_Occurred()) PyErr_Print();
    fatal("Python error in %s", what);
}

static uint32_t fnv1a32(const char *s) {
    uint32_t h = 2166136261u;
    for (; *s; ++s) {
        h ^= (unsigned char)*s;
        h *= 16777619u;
    }
    return h;
}

static const Segment *find_segment(const char *name) {
    for (int i = 0; i < g_num_segments; ++i)
        if (strcmp(g_corpus[i].name, name) == 0) return &g_corpus[i];
    return NULL;
}

/* ---- matrices ------------------------------------------------------------------------------- */

static int is_float32_format(const char *fmt) {
    return fmt && (strcmp(fmt, "f") == 0 || strcmp(fmt, "<f") == 0 || strcmp(fmt, "=f") == 0);
}

/* GIL held. Copies a float32 (rows, cols) matrix into a new column-major C buffer. Returns 0, or
 * -1 with a Python exception set. F-contiguous float32 input takes one memcpy (counted as fast). */
static int matrix_from_py(PyObject *obj, Py_ssize_t *rows, Py_ssize_t *cols, float **out) {
    Py_buffer view;
    PyObject *converted = NULL;
    if (PyObject_GetBuffer(obj, &view, PyBUF_F_CONTIGUOUS | PyBUF_FORMAT) == 0 && view.ndim == 2 &&
        is_float32_format(view.format)) {
        g_fast_in++;
    } else {
        if (PyErr_Occurred()) PyErr_Clear();
        else PyBuffer_Release(&view);
        g_slow_in++;
        converted = PyObject_CallMethod(g_numpy, "asfortranarray", "Os", obj, "float32");
        if (!converted) return -1;
        if (PyObject_GetBuffer(converted, &view, PyBUF_F_CONTIGUOUS | PyBUF_FORMAT) != 0) {
            Py_DECREF(converted);
            return -1;
        }
        if (view.ndim != 2) {
            PyBuffer_Release(&view);
            Py_DECREF(converted);
            PyErr_Format(PyExc_TypeError, "expected a matrix, got %d dimensions", view.ndim);
            return -1;
        }
    }
    *rows = view.shape[0];
    *cols = view.shape[1];
    *out = (float *)malloc((size_t)(*rows) * (size_t)(*cols) * sizeof(float) + 1);
    if (!*out) fatal("out of memory");
    memcpy(*out, view.buf, (size_t)(*rows) * (size_t)(*cols) * sizeof(float));
    PyBuffer_Release(&view);
    Py_XDECREF(converted);
    return 0;
}

/* GIL held. A new (rows, cols) float32 array in Fortran order that owns a copy of `data`. */
static PyObject *matrix_to_py(const float *data, Py_ssize_t rows, Py_ssize_t cols) {
    PyObject *empty = PyObject_GetAttrString(g_numpy, "empty");
    PyObject *args = Py_BuildValue("((nn))", rows, cols);
    PyObject *kwargs = Py_BuildValue("{s:s,s:s}", "dtype", "float32", "order", "F");
    PyObject *arr = (empty && args && kwargs) ? PyObject_Call(empty, args, kwargs) : NULL;
    Py_XDECREF(empty);
    Py_XDECREF(args);
    Py_XDECREF(kwargs);
    if (!arr) return NULL;
    Py_buffer view;
    if (PyObject_GetBuffer(arr, &view, PyBUF_F_CONTIGUOUS | PyBUF_WRITABLE) != 0) {
        Py_DECREF(arr);
        return NULL;
    }
    if (data) memcpy(view.buf, data, (size_t)rows * (size_t)cols * sizeof(float));
    else memset(view.buf, 0, (size_t)rows * (size_t)cols * sizeof(float));
    PyBuffer_Release(&view);
    return arr;
}

/* ---- the criterion (no Python) ---------------------------------------------------------------- */

/* x: (labels, frames) column-major; log_space: x holds log-probabilities, else probabilities.
 * Writes softmax - onehot into err (same layout), returns -sum_t log p(a_t). */
static double cross_entropy(const float *x, long labels, long frames, const double *targets, int log_space,
                            float *err) {
    double loss = 0.0;
    for (long t = 0; t < frames; ++t) {
        const float *col = x + t * labels;
        float *e = err + t * labels;
        long a = (long)targets[t];
        if (a < 0 || a >= labels) fatal("target %ld out of range at frame %ld", a, t);
        if (log_space) {
            double m = col[0];
            for (long l = 1; l < labels; ++l)
                if (col[l] > m) m = col[l];
            double s = 0.0;
            for (long l = 0; l < labels; ++l) s += exp((double)col[l] - m);
            double log_z = m + log(s);
            for (long l = 0; l < labels; ++l) e[l] = (float)exp((double)col[l] - log_z);
            loss -= (double)col[a] - log_z;
        } else {
            double s = 0.0;
            for (long l = 0; l < labels; ++l) s += col[l];
            for (long l = 0; l < labels; ++l) e[l] = (float)(col[l] / s);
            double p = col[a] / s;
            loss -= log(p > 1e-30 ? p : 1e-30);
        }
        e[a] -= 1.0f;
    }
    return loss;
}

static double *targets_of(const char *name, long frames, long labels) {
    double *a = (double *)malloc(sizeof(double) * (size_t)(frames > 0 ? frames : 1));
    if (!a) fatal("out of memory");
    uint32_t h = fnv1a32(name);
    for (long t = 0; t < frames; ++t) a[t] = (double)((h + 7u * (uint32_t)t) % (uint32_t)labels);
    return a;
}

/* ---- the callback RASR hands to Python ------------------------------------------------------ */

static PyObject *kw_get(PyObject *kwargs, const char *key) {
    if (!kwargs) return NULL;
    PyObject *v = PyDict_GetItemString(kwargs, key); /* borrowed */
    return v == Py_None ? NULL : v;
}

static PyObject *calculate_criterion(PyObject *kwargs) {
    PyObject *post = kw_get(kwargs, "posteriors");
    PyObject *orth = kw_get(kwargs, "orthography");
    PyObject *name = kw_get(kwargs, "segment_name");
    PyObject *etype = kw_get(kwargs, "output_error_type");
    PyObject *align = kw_get(kwargs, "alignment");
    if (!post) return PyErr_Format(PyExc_KeyError, "calculate_criterion needs posteriors");
    if (orth && !PyUnicode_Check(orth))
        return PyErr_Format(PyExc_TypeError, "callback() argument 3 must be str, not %s", Py_TYPE(orth)->tp_name);
    if (name && !PyUnicode_Check(name))
        return PyErr_Format(PyExc_TypeError, "segment_name must be str, not %s", Py_TYPE(name)->tp_name);
    if (!etype || !PyUnicode_Check(etype)) return PyErr_Format(PyExc_TypeError, "output_error_type must be str");
    const char *et = PyUnicode_AsUTF8(etype);
    int want_error = 1;
    if (strcmp(et, "none") == 0) want_error = 0;
    else if (strcmp(et, "error-signal") == 0)
        fatal("cross-entropy: output error type 'error-signal' is not implemented (use error-signal-before-softmax)");
    else if (strcmp(et, "error-signal-before-softmax") != 0)
        return PyErr_Format(PyExc_ValueError, "unknown output_error_type %s", et);

    Py_ssize_t rows, cols;
    float *x;
    if (matrix_from_py(post, &rows, &cols, &x) != 0) return NULL;
    if (rows != g_labels) {
        free(x);
        return PyErr_Format(PyExc_ValueError, "posteriors have %zd labels, the criterion %ld", rows, g_labels);
    }
    double *targets = NULL;
    if (align) {
        Py_buffer view;
        if (PyObject_GetBuffer(align, &view, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) != 0) {
            free(x);
            return NULL;
        }
        int f32 = is_float32_format(view.format);
        int f64 = view.format && (strcmp(view.format, "d") == 0 || strcmp(view.format, "<d") == 0);
        if (!f32 && !f64) fatal("alignment must be a float vector, got format %s", view.format);
        if (view.ndim != 1 || view.shape[0] != cols) fatal("alignment length does not match the posteriors");
        targets = (double *)malloc(sizeof(double) * (size_t)(cols > 0 ? cols : 1));
        for (Py_ssize_t t = 0; t < cols; ++t)
            targets[t] = f32 ? (double)((float *)view.buf)[t] : ((double *)view.buf)[t];
        PyBuffer_Release(&view);
    } else {
        if (!name) {
            free(x);
            return PyErr_Format(PyExc_ValueError, "cross-entropy needs an alignment or a segment_name");
        }
        targets = targets_of(PyUnicode_AsUTF8(name), cols, rows);
    }
    float *err = (float *)malloc(sizeof(float) * (size_t)rows * (size_t)cols + 1);
    double loss = cross_entropy(x, rows, cols, targets, g_log_space, err);
    free(x);
    free(targets);
    g_criterion_calls++;
    PyObject *result;
    if (want_error) {
        PyObject *e = matrix_to_py(err, rows, cols);
        result = e ? Py_BuildValue("(dN)", loss, e) : NULL;
    } else {
        result = Py_BuildValue("(dO)", loss, Py_None);
    }
    free(err);
    return result;
}

static PyObject *host_callback(PyObject *self, PyObject *args, PyObject *kwargs) {
    (void)self;
    if (PyTuple_GET_SIZE(args) != 1 || !PyUnicode_Check(PyTuple_GET_ITEM(args, 0)))
        return PyErr_Format(PyExc_TypeError, "callback(cmd, **kwargs): cmd must be one str");
    const char *cmd = PyUnicode_AsUTF8(PyTuple_GET_ITEM(args, 0));
    if (strcmp(cmd, "version") == 0) return PyUnicode_FromString("<version>sprint_host 1</version>");
    if (strcmp(cmd, "version_number") == 0) return PyLong_FromLong(5);
    if (strcmp(cmd, "calculate_criterion") == 0) return calculate_criterion(kwargs);
    return PyErr_Format(PyExc_ValueError, "unknown callback command %s", cmd);
}

static PyMethodDef g_callback_def = {"callback", (PyCFunction)(void (*)(void))host_callback,
                                     METH_VARARGS | METH_KEYWORDS, "RASR's callback"};
static int g_capsule_target = 0;

/* ---- calls into the module, each with the GIL taken just for it ------------------------------ */

/* GIL held: obj.method(**kwargs); kwargs is stolen. */
static PyObject *call_kw(PyObject *obj, const char *method, PyObject *kwargs) {
    if (!kwargs) py_fatal(method);
    PyObject *fn = PyObject_GetAttrString(obj, method);
    if (!fn) py_fatal(method);
    PyObject *empty = PyTuple_New(0);
    PyObject *res = PyObject_Call(fn, empty, kwargs);
    Py_DECREF(empty);
    Py_DECREF(fn);
    Py_DECREF(kwargs);
    if (!res) py_fatal(method);
    return res;
}

static void idle(void) {
    if (g_idle_us > 0) usleep((useconds_t)g_idle_us); /* outside Python: the module's threads run */
}

/* GIL held: the next segment name (a malloc'ed C string), or NULL at the end of the list. */
static char *next_segment(PyObject *it) {
    PyObject *item = PyIter_Next(it);
    if (!item) {
        if (PyErr_Occurred()) py_fatal("the segment list");
        return NULL;
    }
    char *name = NULL;
    if (PyUnicode_Check(item)) name = strdup(PyUnicode_AsUTF8(item));
    else if (PyBytes_Check(item)) name = strdup(PyBytes_AsString(item));
    else fatal("segment list yielded a %s, not a str", Py_TYPE(item)->tp_name);
    Py_DECREF(item);
    return name;
}

static void run(const char *flow, const char *mod_path, const char *mod_name, const char *config) {
    PyGILState_STATE g;
    PyObject *module, *control, *iter, *layer = NULL;

    g = PyGILState_Ensure();
    g_numpy = PyImport_ImportModule("numpy");
    if (!g_numpy) py_fatal("import numpy");
    PyObject *sys_path = PySys_GetObject("path"); /* borrowed */
    PyObject *p = PyUnicode_FromString(mod_path);
    PyList_Insert(sys_path, 0, p);
    Py_DECREF(p);
    module = PyImport_ImportModule(mod_name);
    if (!module) py_fatal("import of the module");
    PyObject *capsule = PyCapsule_New(&g_capsule_target, "Sprint.PythonControl.Internal", NULL);
    PyObject *callback = PyCFunction_NewEx(&g_callback_def, capsule, NULL);
    int flow_b = strcmp(flow, "B") == 0;
    if (flow_b) {
        layer = call_kw(module, "SprintNnPythonLayer", Py_BuildValue("{s:s}", "config", config));
    }
    control = call_kw(module, "init",
                      Py_BuildValue("{s:s,s:s,s:O,s:O,s:i,s:s}", "name", "Sprint.PythonControl", "sprint_unit",
                                    flow_b ? "SegmentwiseNnTrainer" : "NnTrainer.pythonControl", "reference",
                                    capsule, "callback", callback, "version_number", 5, "config", config));
    if (control == Py_None) fatal("init() returned None");
    if (flow_b) {
        Py_DECREF(call_kw(layer, "setInputDimension", Py_BuildValue("{s:i,s:l}", "stream", 0, "size", g_input_dim)));
        Py_DECREF(call_kw(layer, "setOutputDimension", Py_BuildValue("{s:l}", "size", g_labels)));
        Py_DECREF(call_kw(layer, "initializeNetworkParameters", PyDict_New()));
        PyObject *trainable = call_kw(layer, "isTrainable", PyDict_New());
        if (!PyBool_Check(trainable)) fatal("isTrainable() must return a bool");
        Py_DECREF(trainable);
        PyObject *nparams = call_kw(layer, "getNumberOfFreeParameters", PyDict_New());
        if (!PyLong_Check(nparams)) fatal("getNumberOfFreeParameters() must return an int");
        Py_DECREF(nparams);
    } else {
        Py_DECREF(call_kw(control, "init_processing", Py_BuildValue("{s:i,s:i}", "input_dim", -1, "output_dim", -1)));
    }
    PyObject *names = PyList_New(0);
    for (int i = 0; i < g_num_segments; ++i) {
        PyObject *n = PyUnicode_FromString(g_corpus[i].name);
        PyList_Append(names, n);
        Py_DECREF(n);
    }
    PyObject *seglist = call_kw(module, "getSegmentList",
                                Py_BuildValue("{s:s,s:O,s:O,s:s}", "corpusName", "corpus", "segmentList", names,
                                              "segmentsInfo", Py_None, "config", config));
    Py_DECREF(names);
    iter = PyObject_GetIter(seglist);
    if (!iter) py_fatal("getSegmentList result");
    Py_DECREF(seglist);
    PyGILState_Release(g);

    for (;;) {
        g = PyGILState_Ensure();
        char *name = next_segment(iter);
        PyGILState_Release(g);
        if (!name) break;
        g_segments++;
        const Segment *seg = find_segment(name);
        if (!seg) fatal("segment %s is not in the corpus", name);
        idle();
        if (!flow_b) {
            g = PyGILState_Ensure();
            PyObject *orth = PyBytes_FromString(seg->orth); /* RASR passes the orthography as bytes */
            Py_DECREF(call_kw(control, "process_segment",
                              Py_BuildValue("{s:s,s:N,s:O,s:O,s:O,s:O}", "name", name, "orthography", orth,
                                            "speaker_name", Py_None, "features", Py_None, "alignment", Py_None,
                                            "soft_alignment", Py_None)));
            PyGILState_Release(g);
            printf("segment %s processed\n", name);
        } else {
            long frames = seg->frames;
            Py_ssize_t rows, cols;
            float *x;
            g = PyGILState_Ensure();
            Py_DECREF(call_kw(control, "init_segment", Py_BuildValue("{s:s}", "segment_name", name)));
            PyObject *features = matrix_to_py(NULL, g_input_dim, frames);
            if (!features) py_fatal("features");
            PyObject *out = call_kw(layer, "forward", Py_BuildValue("{s:[N]}", "input", features));
            if (matrix_from_py(out, &rows, &cols, &x) != 0) py_fatal("the output of forward");
            Py_DECREF(out);
            PyGILState_Release(g);

            if (rows != g_labels || cols != frames)
                fatal("forward returned (%zd, %zd), expected (%ld, %ld)", rows, cols, g_labels, frames);
            double *targets = targets_of(name, frames, g_labels);
            float *err = (float *)malloc(sizeof(float) * (size_t)rows * (size_t)cols + 1);
            double loss = cross_entropy(x, rows, cols, targets, g_log_space, err);
            free(targets);
            free(x);
            idle();

            g = PyGILState_Ensure();
            Py_DECREF(call_kw(control, "notify_segment_loss",
                              Py_BuildValue("{s:s,s:d}", "segment_name", name, "loss", loss)));
            PyObject *err_py = matrix_to_py(err, rows, cols);
            if (!err_py) py_fatal("error signal");
            PyObject *grads = call_kw(layer, "backpropagate", Py_BuildValue("{s:N}", "errorSignalIn", err_py));
            if (!PyTuple_Check(grads) || PyTuple_GET_SIZE(grads) != 1)
                fatal("backpropagate must return a tuple with one matrix per input stream");
            float *gx;
            if (matrix_from_py(PyTuple_GET_ITEM(grads, 0), &rows, &cols, &gx) != 0) py_fatal("gradient");
            if (rows != g_input_dim || cols != frames) fatal("backpropagate returned a (%zd, %zd) gradient", rows, cols);
            free(gx);
            Py_DECREF(grads);
            PyGILState_Release(g);
            free(err);
            printf("segment %s loss %.9g\n", name, loss);
        }
        fflush(stdout);
        free(name);
        idle();
    }

    g = PyGILState_Ensure();
    Py_DECREF(iter);
    if (layer) {
        Py_DECREF(call_kw(layer, "finalize", PyDict_New()));
        Py_DECREF(layer);
    }
    Py_DECREF(call_kw(control, "exit", PyDict_New()));
    Py_DECREF(control);
    Py_DECREF(callback);
    Py_DECREF(capsule);
    Py_DECREF(module);
    PyGILState_Release(g);
}

/* ---- command line ------------------------------------------------------------------------------ */

static const char *arg_value(const char *arg, const char *key) {
    size_t n = strlen(key);
    return strncmp(arg, key, n) == 0 && arg[n] == '=' ? arg + n + 1 : NULL;
}

static void load_corpus(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) fatal("cannot open the corpus file %s", path);
    char line[65536];
    int cap = 16;
    g_corpus = (Segment *)malloc(sizeof(Segment) * (size_t)cap);
    while (fgets(line, sizeof line, f)) {
        size_t len = strlen(line);
        while (len && (line[len - 1] == '\n' || line[len - 1] == '\r')) line[--len] = 0;
        if (!len) continue;
        char *tab1 = strchr(line, '\t');
        char *tab2 = tab1 ? strchr(tab1 + 1, '\t') : NULL;
        if (!tab2) fatal("corpus line without two tabs: %s", line);
        *tab1 = 0;
        *tab2 = 0;
        if (g_num_segments == cap) g_corpus = (Segment *)realloc(g_corpus, sizeof(Segment) * (size_t)(cap *= 2));
        g_corpus[g_num_segments].name = strdup(line);
        g_corpus[g_num_segments].frames = atol(tab1 + 1);
        g_corpus[g_num_segments].orth = strdup(tab2 + 1);
        g_num_segments++;
    }
    fclose(f);
}

int main(int argc, char **argv) {
    const char *flow = "A", *mod_path = ".", *mod_name = "sprint_control", *config = "", *corpus = NULL, *v;
    for (int i = 1; i < argc; ++i) {
        if ((v = arg_value(argv[i], "--flow"))) flow = v;
        else if ((v = arg_value(argv[i], "--pymod-path"))) mod_path = v;
        else if ((v = arg_value(argv[i], "--pymod-name"))) mod_name = v;
        else if ((v = arg_value(argv[i], "--pymod-config"))) config = v;
        else if ((v = arg_value(argv[i], "--corpus"))) corpus = v;
        else if ((v = arg_value(argv[i], "--labels"))) g_labels = atol(v);
        else if ((v = arg_value(argv[i], "--input-dim"))) g_input_dim = atol(v);
        else if ((v = arg_value(argv[i], "--input-in-log-space"))) g_log_space = strcmp(v, "true") == 0;
        else if ((v = arg_value(argv[i], "--idle-us"))) g_idle_us = atol(v);
        else fatal("unknown argument %s", argv[i]);
    }
    if (strcmp(flow, "A") != 0 && strcmp(flow, "B") != 0) fatal("--flow must be A or B");
    if (!corpus || g_labels <= 0 || g_input_dim <= 0) fatal("--corpus, --labels (> 0) and --input-dim (> 0) are needed");
    load_corpus(corpus);

    Py_Initialize();
    PyThreadState *main_state = PyEval_SaveThread(); /* from here on the GIL is taken per call */
    run(flow, mod_path, mod_name, config);
    PyEval_RestoreThread(main_state);
    fprintf(stderr, "sprint_host: segments=%ld criterion_calls=%ld fast_in=%ld slow_in=%ld\n", g_segments,
            g_criterion_calls, g_fast_in, g_slow_in);
    fflush(stderr);
    fflush(stdout);
    if (Py_FinalizeEx() < 0) return 1;
    return 0;
}
