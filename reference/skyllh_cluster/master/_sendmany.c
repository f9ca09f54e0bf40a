/*
 * skyllh_cluster.master._sendmany: the send(2) calls of a broadcast, without the GIL.
 *
 * A broadcast writes one frame to thousands of sockets.  Each socket.send
 * from Python gives up the GIL for its system call and takes it back after;
 * with a fan-out thread per core, every send is a GIL hand-off between
 * threads, and the hand-offs cost about a tenth of the broadcast's CPU.
 * send_each() makes a whole chunk's calls with the GIL released once.
 *
 * It is optional: the package builds it where a C compiler is at hand, and
 * the engine (master/server.py) makes the same calls from Python otherwise.
 * It decides nothing: which sockets get which bytes is the engine's, and the
 * protocol's decisions were made before, in the sans-I/O core.  It reads
 * nothing from the network.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <limits.h>
#include <sys/socket.h>
#include <sys/types.h>

#ifndef MSG_NOSIGNAL
/* macOS has none; Python ignores SIGPIPE anyway, so EPIPE comes back as an errno. */
#define MSG_NOSIGNAL 0
#endif

PyDoc_STRVAR(send_each_doc,
"send_each(fds, data, /) -> list[int]\n"
"\n"
"Write ``data`` to each descriptor in ``fds`` with one non-blocking send(2)\n"
"(MSG_DONTWAIT), in order, holding the GIL only to read ``fds`` and to build\n"
"the result.  Returns, for each descriptor, the number of bytes its socket\n"
"took (possibly fewer than ``len(data)``), or minus the errno of its failure\n"
"(for example -EAGAIN when its buffer is full, -EPIPE when the peer has gone).\n"
"An interrupted call (EINTR) is made again.");

static PyObject *
send_each(PyObject *module, PyObject *args)
{
    PyObject *fds_arg;
    Py_buffer data;
    if (!PyArg_ParseTuple(args, "Oy*:send_each", &fds_arg, &data)) {
        return NULL;
    }
    PyObject *result = NULL;
    int *fds = NULL;
    Py_ssize_t *taken = NULL;
    PyObject *fds_seq = PySequence_Fast(fds_arg, "send_each() needs a sequence of descriptors");
    if (fds_seq == NULL) {
        goto done;
    }
    Py_ssize_t count = PySequence_Fast_GET_SIZE(fds_seq);
    fds = PyMem_New(int, count > 0 ? count : 1);
    taken = PyMem_New(Py_ssize_t, count > 0 ? count : 1);
    if (fds == NULL || taken == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t i = 0; i < count; i++) {
        long fd = PyLong_AsLong(PySequence_Fast_GET_ITEM(fds_seq, i));
        if (fd == -1 && PyErr_Occurred()) {
            goto done;
        }
        if (fd < 0 || fd > INT_MAX) {
            PyErr_Format(PyExc_ValueError, "not a file descriptor: %ld", fd);
            goto done;
        }
        fds[i] = (int)fd;
    }

    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < count; i++) {
        ssize_t sent;
        do {
            sent = send(fds[i], data.buf, (size_t)data.len, MSG_DONTWAIT | MSG_NOSIGNAL);
        } while (sent < 0 && errno == EINTR);
        taken[i] = sent >= 0 ? (Py_ssize_t)sent : -(Py_ssize_t)errno;
    }
    Py_END_ALLOW_THREADS

    result = PyList_New(count);
    if (result == NULL) {
        goto done;
    }
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *item = PyLong_FromSsize_t(taken[i]);
        if (item == NULL) {
            Py_CLEAR(result);
            goto done;
        }
        PyList_SET_ITEM(result, i, item);
    }

done:
    PyMem_Free(fds);
    PyMem_Free(taken);
    Py_XDECREF(fds_seq);
    PyBuffer_Release(&data);
    return result;
}

static PyMethodDef sendmany_methods[] = {
    {"send_each", send_each, METH_VARARGS, send_each_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef sendmany_module = {
    PyModuleDef_HEAD_INIT,
    "skyllh_cluster.master._sendmany",
    "The send(2) calls of a broadcast, made with the GIL released once per chunk.",
    -1,
    sendmany_methods,
};

PyMODINIT_FUNC
PyInit__sendmany(void)
{
    return PyModule_Create(&sendmany_module);
}
