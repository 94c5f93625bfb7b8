/* Take a run of plain small files from the archive reader's buffer in one call.
 *
 * In a new layer, most members of a layer of small files are regular files
 * with a clean name in a directory the extraction has already made, owned by
 * the extracting user, with a mode that open() gives as it is.  The Python
 * extraction (layerstore.archive.apply) spends about four microseconds of
 * interpreter work on each: the header, the name's checks, the resolution of
 * its parent, the file's bookkeeping and its hand-over to the file pool.
 * take_plain_files does the same for a run of such members that lies whole in
 * the buffer and stops, without having changed anything, at the first member
 * that is anything else, which the Python code then takes as before.  Every
 * test that decides whether a member may be taken reads the extraction's own
 * sets and dictionaries, so a member taken here is handled exactly as the
 * Python code would handle it.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <string.h>

#include "tarblock.h"

/* Whether `name` (length n, NUL-free) is a clean relative member name: printable ASCII,
 * only real components, no ".wh.".  Then the Python code's components are exactly the name
 * split at its slashes. */
static int
clean_name(const char *name, Py_ssize_t n)
{
    for (Py_ssize_t i = 0; i < n; i++) {
        if ((unsigned char)name[i] < 0x20 || (unsigned char)name[i] > 0x7e)
            return 0;
    }
    return plain_components(name, n) && !has_whiteout_marker(name, n);
}

/* A pax time of the plain shape (digits, optionally "." and digits, at most 9e9 s) in
 * nanoseconds, the fraction cut after nine digits as the Python code does; -1 for any
 * other shape, left to the Python code. */
static long long
plain_pax_time(const unsigned char *value, Py_ssize_t n)
{
    long long seconds = 0, fraction = 0;
    Py_ssize_t i = 0;
    while (i < n && value[i] >= '0' && value[i] <= '9' && seconds <= 9000000000LL)
        seconds = seconds * 10 + (value[i++] - '0');
    if (i == 0 || seconds > 9000000000LL)
        return -1;
    if (i < n) {
        if (value[i++] != '.')
            return -1;
        int digits = 0;
        for (; i < n; i++) {
            if (value[i] < '0' || value[i] > '9')
                return -1;
            if (digits < 9) {
                fraction = fraction * 10 + (value[i] - '0');
                digits++;
            }
        }
        for (; digits < 9; digits++)
            fraction *= 10;
    }
    return seconds * 1000000000LL + fraction;
}

/* Read a pax header's records `data[0:size]` if they are only plain "atime", "ctime" and
 * "mtime" records (GNU tar's posix format writes those for every member); a NUL where a
 * record would begin ends them.  Set *atime and *mtime (ns, -1 when absent; ctime is not
 * kept) and return 1, or return 0 for anything else. */
static int
plain_time_records(const unsigned char *data, Py_ssize_t size, long long *atime, long long *mtime)
{
    *atime = *mtime = -1;
    Py_ssize_t pos = 0;
    while (pos < size && data[pos] != 0) {
        const unsigned char *key, *text;
        Py_ssize_t key_length, text_length;
        Py_ssize_t next = pax_record(data, size, pos, 6, &key, &key_length, &text, &text_length);
        if (next < 0 || key_length != 5)
            return 0;
        long long value = plain_pax_time(text, text_length);
        if (value < 0)
            return 0;
        if (memcmp(key, "atime", 5) == 0)
            *atime = value;
        else if (memcmp(key, "mtime", 5) == 0)
            *mtime = value;
        else if (memcmp(key, "ctime", 5) != 0)
            return 0;
        pos = next;
    }
    return 1;
}

PyDoc_STRVAR(take_plain_files_doc,
"take_plain_files(buffer, pos, end, index, limit, path_room, prefix, dirs, created, plain_dirs,\n"
"                 owners, creds, mode_mask, contents, pending_file, /)\n"
"--\n"
"\n"
"Take the run of plain small regular files that starts at header offset `pos`\n"
"of `buffer` (bytes up to `end` are valid); `index` is the member number of\n"
"the member before it.  A member is taken when its header has the common\n"
"shape (matching checksum, octal fields, ustar or GNU magic, no name prefix or\n"
"GNU time, type '0' or NUL), at most one pax header of plain atime, ctime and\n"
"mtime records comes before it, its payload and padding lie in the buffer, its\n"
"size is at most `limit`, its name is clean (printable ASCII, relative, no\n"
"empty, '.' or '..' component, no '.wh.') and at most `path_room` bytes, its\n"
"parent is in `dirs` with `plain_dirs` True, neither `created` nor `dirs`\n"
"holds the name, ``owners[(uid, gid)] == creds``, and its mode has no bit of\n"
"`mode_mask`.  For each member taken: it is added to `created`, `contents`\n"
"maps it to (name, member number) if it has data, and a ``pending_file(prefix\n"
"+ name, name, data, mode, (atime_ns, mtime_ns))`` is made (the atime is the\n"
"mtime without a pax atime).  Return None if\n"
"the first member is not taken, else (pos, count, [pending, ...], total size,\n"
"last name).");

static PyObject *
take_plain_files(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 15) {
        PyErr_SetString(PyExc_TypeError, "take_plain_files() takes 15 arguments");
        return NULL;
    }
    Py_ssize_t pos = PyLong_AsSsize_t(args[1]);
    Py_ssize_t end = PyLong_AsSsize_t(args[2]);
    long long index = PyLong_AsLongLong(args[3]);
    long long limit = PyLong_AsLongLong(args[4]);
    Py_ssize_t path_room = PyLong_AsSsize_t(args[5]);
    long mode_mask = PyLong_AsLong(args[12]);
    if (PyErr_Occurred())
        return NULL;
    PyObject *prefix = args[6], *dirs = args[7], *created = args[8], *plain_dirs = args[9];
    PyObject *owners = args[10], *creds = args[11], *contents = args[13], *pending_file = args[14];
    if (!PyUnicode_Check(prefix) || !PySet_Check(dirs) || !PySet_Check(created) || !PyDict_Check(plain_dirs) ||
        !PyDict_Check(owners) || !PyDict_Check(contents)) {
        PyErr_SetString(PyExc_TypeError, "take_plain_files(): wrong argument types");
        return NULL;
    }

    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0)
        return NULL;
    const unsigned char *buf = (const unsigned char *)view.buf;
    if (pos < 0 || end > view.len || pos > end) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "take_plain_files(): positions outside the buffer");
        return NULL;
    }

    PyObject *jobs = PyList_New(0);
    PyObject *empty = PyUnicode_FromStringAndSize("", 0);
    PyObject *last = NULL; /* owned */
    long long total = 0;
    Py_ssize_t count = 0;
    long long known_uid = -1, known_gid = -1; /* the last owner found to be `creds` */
    if (jobs == NULL || empty == NULL)
        goto error;

    while (end - pos >= BLOCK) {
        const unsigned char *h = buf + pos;
        long long pax_atime = -1, pax_mtime = -1;
        Py_ssize_t pax_length = 0; /* the pax header and its data before the member, if any */
        if (h[156] == 'x') {
            long long pax_size;
            if (!checksum_matches(h) || plain_octal(h + 124, 12, &pax_size) < 0 || pax_size > 4096)
                break;
            pax_length = BLOCK + (Py_ssize_t)((pax_size + BLOCK - 1) / BLOCK * BLOCK);
            if (end - pos - pax_length < BLOCK ||
                !plain_time_records(h + BLOCK, (Py_ssize_t)pax_size, &pax_atime, &pax_mtime))
                break;
            h += pax_length;
        }
        unsigned char type = h[156];
        if ((type != '0' && type != 0) || !checksum_matches(h))
            break;
        if (memcmp(h + 257, "ustar\0", 6) != 0 && memcmp(h + 257, "ustar  \0", 8) != 0)
            break;
        if (h[345] != 0)
            break; /* a ustar name prefix or a GNU access time */
        long long size, mode, uid, gid, mtime;
        if (plain_octal(h + 124, 12, &size) < 0 || plain_octal(h + 100, 8, &mode) < 0 ||
            plain_octal(h + 108, 8, &uid) < 0 || plain_octal(h + 116, 8, &gid) < 0 ||
            plain_octal(h + 136, 12, &mtime) < 0)
            break;
        long long padded = (size + BLOCK - 1) / BLOCK * BLOCK;
        if (size > limit || padded > end - pos - pax_length - BLOCK || (pax_mtime < 0 && mtime > 9000000000LL))
            break; /* (a time in nanoseconds beyond 64 bits is the Python code's) */
        long long mtime_ns = pax_mtime >= 0 ? pax_mtime : mtime * 1000000000LL;
        long long atime_ns = pax_atime >= 0 ? pax_atime : mtime_ns;
        mode &= 07777;
        if (mode & mode_mask)
            break;
        const unsigned char *name_end = memchr(h, 0, 100);
        Py_ssize_t name_length = name_end ? name_end - h : 100;
        if (name_length > path_room || !clean_name((const char *)h, name_length))
            break;

        /* The Python code's tests, on its own sets and dictionaries; nothing changes before all pass. */
        if (uid != known_uid || gid != known_gid) {
            PyObject *key = Py_BuildValue("(LL)", uid, gid);
            if (key == NULL)
                goto error;
            PyObject *host = PyDict_GetItemWithError(owners, key); /* borrowed */
            Py_DECREF(key);
            if (host == NULL) {
                if (PyErr_Occurred())
                    goto error;
                break; /* not mapped yet: the Python code maps it (or refuses it) */
            }
            int same = PyObject_RichCompareBool(host, creds, Py_EQ);
            if (same < 0)
                goto error;
            if (!same)
                break;
            known_uid = uid;
            known_gid = gid;
        }
        PyObject *name = PyUnicode_DecodeASCII((const char *)h, name_length, NULL);
        if (name == NULL)
            goto error;
        const unsigned char *slash = NULL;
        for (const unsigned char *p = h + name_length; p > h;) {
            if (*--p == '/') {
                slash = p;
                break;
            }
        }
        PyObject *parent = slash ? PyUnicode_Substring(name, 0, slash - h) : Py_NewRef(empty);
        if (parent == NULL) {
            Py_DECREF(name);
            goto error;
        }
        int ok = PySet_Contains(dirs, parent);
        if (ok == 1) {
            PyObject *plain = PyDict_GetItemWithError(plain_dirs, parent); /* borrowed */
            ok = plain == Py_True ? 1 : (plain == NULL && PyErr_Occurred()) ? -1 : 0;
        }
        Py_DECREF(parent);
        if (ok == 1) { /* nothing of this archive is at the name yet */
            int there = PySet_Contains(created, name);
            if (there == 0)
                there = PySet_Contains(dirs, name);
            ok = there < 0 ? -1 : !there;
        }
        if (ok != 1) {
            Py_DECREF(name);
            if (ok < 0)
                goto error;
            break;
        }

        /* Taken. */
        index += 1;
        PyObject *data = PyBytes_FromStringAndSize((const char *)h + BLOCK, (Py_ssize_t)size);
        PyObject *path = data ? PyUnicode_Concat(prefix, name) : NULL;
        PyObject *job = path ? PyObject_CallFunction(pending_file, "OOOl(LL)", path, name, data, (long)mode,
                                                     atime_ns, mtime_ns)
                             : NULL;
        int failed = job == NULL || PyList_Append(jobs, job) < 0 || PySet_Add(created, name) < 0;
        if (!failed && size > 0) {
            PyObject *where = Py_BuildValue("(OL)", name, index);
            failed = where == NULL || PyDict_SetItem(contents, name, where) < 0;
            Py_XDECREF(where);
        }
        Py_XDECREF(data);
        Py_XDECREF(path);
        Py_XDECREF(job);
        if (failed) {
            Py_DECREF(name);
            goto error;
        }
        Py_XDECREF(last);
        last = name;
        total += size;
        count += 1;
        pos += pax_length + BLOCK + (Py_ssize_t)padded;
    }

    PyBuffer_Release(&view);
    Py_DECREF(empty);
    if (count == 0) {
        Py_DECREF(jobs);
        Py_RETURN_NONE;
    }
    return Py_BuildValue("(nnNLN)", pos, count, jobs, total, last);

error:
    PyBuffer_Release(&view);
    Py_XDECREF(jobs);
    Py_XDECREF(empty);
    Py_XDECREF(last);
    return NULL;
}

static PyMethodDef methods[] = {
    {"take_plain_files", (PyCFunction)(void (*)(void))take_plain_files, METH_FASTCALL, take_plain_files_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    "layerstore_accel._plainfiles",
    "Runs of plain small regular files taken from the archive reader's buffer in one call (see take_plain_files).",
    -1,
    methods,
};

PyMODINIT_FUNC
PyInit__plainfiles(void)
{
    return PyModule_Create(&module);
}
