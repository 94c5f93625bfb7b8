/* Create a batch of small regular files with the GIL released for the whole batch.
 *
 * layerstore's extraction hands small files of a new layer to helper threads
 * (layerstore.archive._filepool).  From Python, each of the four system calls
 * per file (open, write, utimensat, close) takes the GIL back, and the GIL is
 * busy with the extraction's own Python work, so the threads mostly wait.
 * Here the calls for a whole batch run without the GIL.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

typedef struct {
    const char *path;
    const char *data;
    Py_ssize_t size;
    int mode;
    long long atime_ns;
    long long mtime_ns;
} job_t;

static int
write_all(int fd, const char *data, Py_ssize_t size)
{
    while (size > 0) {
        ssize_t written = write(fd, data, (size_t)size);
        if (written < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        data += written;
        size -= written;
    }
    return 0;
}

static void
to_timespec(long long ns, struct timespec *ts)
{
    long long sec = ns / 1000000000LL;
    long long rem = ns % 1000000000LL;
    if (rem < 0) {
        rem += 1000000000LL;
        sec -= 1;
    }
    ts->tv_sec = (time_t)sec;
    ts->tv_nsec = (long)rem;
}

/* Create one file; return 0 or the errno of the call that failed. */
static int
create_one(const job_t *job)
{
    int fd;
    do {
        fd = open(job->path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, (mode_t)job->mode);
    } while (fd < 0 && errno == EINTR);
    if (fd < 0)
        return errno;
    struct timespec times[2];
    to_timespec(job->atime_ns, &times[0]);
    to_timespec(job->mtime_ns, &times[1]);
    if (write_all(fd, job->data, job->size) < 0 || futimens(fd, times) < 0) {
        int error = errno;
        close(fd);
        return error;
    }
    if (close(fd) < 0 && errno != EINTR)
        return errno;
    return 0;
}

PyDoc_STRVAR(create_files_doc,
"create_files(jobs, /)\n"
"--\n"
"\n"
"Create each file of `jobs`, a tuple of (path: bytes, data: bytes, mode: int,\n"
"atime_ns: int, mtime_ns: int) tuples, in order: a new name (O_EXCL, a final\n"
"symbolic link never followed), the data, then the times.  The GIL is released\n"
"for the whole batch.  Return None when all were created, else (index, errno)\n"
"of the first that failed; the ones after it are not attempted.");

static PyObject *
create_files(PyObject *module, PyObject *jobs)
{
    if (!PyTuple_Check(jobs)) {
        PyErr_SetString(PyExc_TypeError, "create_files() takes a tuple of jobs");
        return NULL;
    }
    Py_ssize_t count = PyTuple_GET_SIZE(jobs);
    job_t *batch = PyMem_Calloc(count ? (size_t)count : 1, sizeof(job_t));
    if (batch == NULL)
        return PyErr_NoMemory();
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *item = PyTuple_GET_ITEM(jobs, i);
        PyObject *path, *data;
        if (!PyTuple_Check(item) ||
            !PyArg_ParseTuple(item, "SSiLL:create_files", &path, &data, &batch[i].mode,
                              &batch[i].atime_ns, &batch[i].mtime_ns)) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_TypeError, "each job is (path, data, mode, atime_ns, mtime_ns)");
            PyMem_Free(batch);
            return NULL;
        }
        batch[i].path = PyBytes_AS_STRING(path);
        if ((Py_ssize_t)strlen(batch[i].path) != PyBytes_GET_SIZE(path)) {
            PyErr_SetString(PyExc_ValueError, "create_files(): embedded null byte in a path");
            PyMem_Free(batch);
            return NULL;
        }
        batch[i].data = PyBytes_AS_STRING(data);
        batch[i].size = PyBytes_GET_SIZE(data);
    }
    /* The tuple `jobs` and the bytes in it are immutable and referenced by the caller. */
    Py_ssize_t failed = -1;
    int error = 0;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < count; i++) {
        error = create_one(&batch[i]);
        if (error) {
            failed = i;
            break;
        }
    }
    Py_END_ALLOW_THREADS
    PyMem_Free(batch);
    if (failed < 0)
        Py_RETURN_NONE;
    return Py_BuildValue("(ni)", failed, error);
}

static PyMethodDef methods[] = {
    {"create_files", create_files, METH_O, create_files_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    "layerstore_accel._files",
    "Batches of small files created with the GIL released (see create_files).",
    -1,
    methods,
};

PyMODINIT_FUNC
PyInit__files(void)
{
    return PyModule_Create(&module);
}
