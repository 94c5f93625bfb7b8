/* Decode a tar header block of the common shape in one call.
 *
 * layerstore's archive reader (layerstore.archive.tarstream) decodes each
 * header in Python: the checksum, the name with its ustar prefix, the size,
 * mode, IDs, time, link target and owner names.  That is about ten
 * microseconds of interpreter work per entry, most of an import of a layer
 * of small files.  parse_header does the same for the headers that GNU tar,
 * Go, Python and libarchive write in the usual case, and answers None for
 * anything else, which the reader then decodes in Python as before: so every
 * header it does decode has exactly the values the Python code gives.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <string.h>

#include "tarblock.h"

/* The bytes of a NUL-terminated string field, decoded as UTF-8 with surrogate escapes. */
static PyObject *
field_text(const unsigned char *field, Py_ssize_t width)
{
    const unsigned char *end = memchr(field, 0, (size_t)width);
    Py_ssize_t length = end ? end - field : width;
    return PyUnicode_DecodeUTF8((const char *)field, length, "surrogateescape");
}

PyDoc_STRVAR(parse_header_doc,
"parse_header(block, /)\n"
"--\n"
"\n"
"Decode a 512-byte tar header block of the common shape.  Return (typeflag,\n"
"name, size, mode, uid, gid, mtime, linkname, uname, gname), or None when\n"
"the block is anything else: a checksum that does not match its unsigned\n"
"byte sum, a numeric field that is not octal digits followed by spaces or\n"
"NULs, a header without the ustar magic, a GNU header carrying an access\n"
"time.  The name is joined with the ustar prefix; text is UTF-8 with\n"
"surrogate escapes; mode is the whole field.");

static PyObject *
parse_header(PyObject *module, PyObject *arg)
{
    if (!PyBytes_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "parse_header() takes bytes");
        return NULL;
    }
    if (PyBytes_GET_SIZE(arg) != BLOCK)
        Py_RETURN_NONE;
    const unsigned char *h = (const unsigned char *)PyBytes_AS_STRING(arg);

    if (!checksum_matches(h))
        Py_RETURN_NONE;

    int posix = memcmp(h + 257, "ustar\0", 6) == 0;
    if (!posix) {
        if (memcmp(h + 257, "ustar ", 6) != 0)
            Py_RETURN_NONE; /* v7 and unknown magic */
        if (memcmp(h + 257, "ustar  \0", 8) == 0 && h[345] != 0)
            Py_RETURN_NONE; /* a GNU access time */
    }

    long long size, mode, uid, gid, mtime;
    if (plain_octal(h + 124, 12, &size) < 0 || plain_octal(h + 100, 8, &mode) < 0 ||
        plain_octal(h + 108, 8, &uid) < 0 || plain_octal(h + 116, 8, &gid) < 0 ||
        plain_octal(h + 136, 12, &mtime) < 0)
        Py_RETURN_NONE;

    PyObject *name;
    const unsigned char *name_end = memchr(h, 0, 100);
    Py_ssize_t name_length = name_end ? name_end - h : 100;
    if (posix && h[345] != 0) {
        const unsigned char *prefix_end = memchr(h + 345, 0, 155);
        Py_ssize_t prefix_length = prefix_end ? prefix_end - (h + 345) : 155;
        char joined[155 + 1 + 100];
        memcpy(joined, h + 345, (size_t)prefix_length);
        joined[prefix_length] = '/';
        memcpy(joined + prefix_length + 1, h, (size_t)name_length);
        name = PyUnicode_DecodeUTF8(joined, prefix_length + 1 + name_length, "surrogateescape");
    }
    else {
        name = PyUnicode_DecodeUTF8((const char *)h, name_length, "surrogateescape");
    }
    if (name == NULL)
        return NULL;
    PyObject *linkname = field_text(h + 157, 100);
    PyObject *uname = field_text(h + 265, 32);
    PyObject *gname = field_text(h + 297, 32);
    if (linkname == NULL || uname == NULL || gname == NULL) {
        Py_DECREF(name);
        Py_XDECREF(linkname);
        Py_XDECREF(uname);
        Py_XDECREF(gname);
        return NULL;
    }
    return Py_BuildValue("(iNLLLLLNNN)", (int)h[156], name, size, mode, uid, gid, mtime, linkname, uname,
                         gname);
}

/* Whether the bytes hold a NUL. */
static int
has_nul(const unsigned char *bytes, Py_ssize_t length)
{
    return memchr(bytes, 0, (size_t)length) != NULL;
}

PyDoc_STRVAR(parse_pax_doc,
"parse_pax(data, /)\n"
"--\n"
"\n"
"Parse the records (\"%d %s=%s\\n\") of a pax extended header's data into a\n"
"dict, a later record winning; a NUL where a record would begin ends the data.\n"
"Return None for data that is anything else, and for GNU sparse offset and\n"
"size records: a length that is not plain digits or does not fit, a record\n"
"without \"key=\" or final newline, a NUL in a key or in the value of path,\n"
"linkpath, uname or gname.");

static PyObject *
parse_pax(PyObject *module, PyObject *arg)
{
    if (!PyBytes_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "parse_pax() takes bytes");
        return NULL;
    }
    const unsigned char *data = (const unsigned char *)PyBytes_AS_STRING(arg);
    Py_ssize_t size = PyBytes_GET_SIZE(arg);
    PyObject *records = PyDict_New();
    if (records == NULL)
        return NULL;
    Py_ssize_t pos = 0;
    while (pos < size && data[pos] != 0) {
        const unsigned char *key, *value;
        Py_ssize_t key_length, value_length;
        Py_ssize_t next = pax_record(data, size, pos, 9, &key, &key_length, &value, &value_length);
        if (next < 0)
            goto unusual;
        if (has_nul(key, key_length))
            goto unusual;
        if (((key_length == 4 && memcmp(key, "path", 4) == 0) ||
             (key_length == 8 && memcmp(key, "linkpath", 8) == 0) ||
             (key_length == 5 && (memcmp(key, "uname", 5) == 0 || memcmp(key, "gname", 5) == 0))) &&
            has_nul(value, value_length))
            goto unusual;
        if (key_length >= 17 && memcmp(key, "GNU.sparse.", 11) == 0 &&
            ((key_length == 17 && memcmp(key + 11, "offset", 6) == 0) ||
             (key_length == 19 && memcmp(key + 11, "numbytes", 8) == 0)))
            goto unusual; /* joined into one map record: Python's rule */
        PyObject *k = PyBytes_FromStringAndSize((const char *)key, key_length);
        PyObject *v = k ? PyBytes_FromStringAndSize((const char *)value, value_length) : NULL;
        int failed = v == NULL || PyDict_SetItem(records, k, v) < 0;
        Py_XDECREF(k);
        Py_XDECREF(v);
        if (failed) {
            Py_DECREF(records);
            return NULL;
        }
        pos = next;
    }
    return records;
unusual:
    Py_DECREF(records);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"parse_header", parse_header, METH_O, parse_header_doc},
    {"parse_pax", parse_pax, METH_O, parse_pax_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    "layerstore_accel._tarheader",
    "Tar header blocks of the common shape decoded in one call (see parse_header).",
    -1,
    methods,
};

PyMODINIT_FUNC
PyInit__tarheader(void)
{
    return PyModule_Create(&module);
}
