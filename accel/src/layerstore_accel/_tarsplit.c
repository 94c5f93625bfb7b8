/* Record the common members of a tar archive as tar-split entries in one call.
 *
 * layerstore records tar-split metadata while it imports a layer
 * (layerstore.tarsplit.segmenter.Segmenter, run in a worker process beside
 * the extraction).  In Python that costs about ten microseconds per header:
 * decoding it as Go's archive/tar does, the pax records, the name rules, the
 * JSON lines.  segment_members does the same for a run of members of the
 * usual shape (a header as GNU tar, Go, Python or libarchive write it,
 * optionally after one pax header with plain records) and stops, without
 * consuming anything of it, at the first member it does not take: the
 * Python segmenter then carries on from there with its own rules.  So the
 * entries it writes are the ones the Python code writes, byte for byte.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <string.h>

#include "tarblock.h"

#define MAX_SPECIAL (1 << 20) /* largest pax header the recorder accepts */
#define NAME_MAX_BYTES (155 + 1 + 100)

/* What the segmenter does next; the values are those of the Python segmenter's states. */
#define STATE_HEADER 0
#define STATE_DATA 1
#define STATE_PAD 3

/* A growing byte buffer. */
typedef struct {
    char *data;
    Py_ssize_t length;
    Py_ssize_t capacity;
} Buffer;

static int
buffer_reserve(Buffer *buffer, Py_ssize_t extra)
{
    if (buffer->length + extra <= buffer->capacity)
        return 0;
    Py_ssize_t capacity = buffer->capacity ? buffer->capacity : 8192;
    while (capacity < buffer->length + extra)
        capacity *= 2;
    char *data = PyMem_Realloc(buffer->data, (size_t)capacity);
    if (data == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    buffer->data = data;
    buffer->capacity = capacity;
    return 0;
}

static int
buffer_add(Buffer *buffer, const void *bytes, Py_ssize_t length)
{
    if (buffer_reserve(buffer, length) < 0)
        return -1;
    memcpy(buffer->data + buffer->length, bytes, (size_t)length);
    buffer->length += length;
    return 0;
}

static int
buffer_text(Buffer *buffer, const char *text)
{
    return buffer_add(buffer, text, (Py_ssize_t)strlen(text));
}

static int
buffer_number(Buffer *buffer, long long value)
{
    char digits[24];
    int length = snprintf(digits, sizeof digits, "%lld", value);
    return buffer_add(buffer, digits, length);
}

/* Standard base64 with '=' padding, as binascii.b2a_base64(newline=False) writes it. */
static int
buffer_base64(Buffer *buffer, const unsigned char *bytes, Py_ssize_t length)
{
    static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    if (buffer_reserve(buffer, (length + 2) / 3 * 4) < 0)
        return -1;
    char *out = buffer->data + buffer->length;
    Py_ssize_t i = 0;
    for (; i + 3 <= length; i += 3) {
        unsigned int triple = (unsigned int)bytes[i] << 16 | (unsigned int)bytes[i + 1] << 8 | bytes[i + 2];
        *out++ = alphabet[triple >> 18];
        *out++ = alphabet[(triple >> 12) & 63];
        *out++ = alphabet[(triple >> 6) & 63];
        *out++ = alphabet[triple & 63];
    }
    if (i < length) {
        unsigned int triple = (unsigned int)bytes[i] << 16;
        if (i + 1 < length)
            triple |= (unsigned int)bytes[i + 1] << 8;
        *out++ = alphabet[triple >> 18];
        *out++ = alphabet[(triple >> 12) & 63];
        *out++ = i + 1 < length ? alphabet[(triple >> 6) & 63] : '=';
        *out++ = '=';
    }
    buffer->length = out - buffer->data;
    return 0;
}

/* devmajor or devminor as Go accepts it: all NULs, or a plain octal number. */
static int
device_field_ok(const unsigned char *field)
{
    static const unsigned char zeros[8];
    long long ignored;
    return memcmp(field, zeros, 8) == 0 || plain_octal(field, 8, &ignored) == 0;
}

typedef struct {
    int typeflag;
    long long size;
    char name[NAME_MAX_BYTES];
    Py_ssize_t name_length;
} Header;

/* Decode a header block of the common shape as Go's archive/tar reads it; -1 for any other block.
 *
 * Common: the checksum is the unsigned byte sum, mode, IDs, size and time are
 * plain octal, the magic is ustar (devices plain or empty, no star trailer;
 * the prefix joins the name) or GNU (devices plain or empty, no access or
 * change time, so no prefix). */
static int
go_header(const unsigned char *h, Header *header)
{
    long long value;
    if (!checksum_matches(h))
        return -1;
    if (plain_octal(h + 100, 8, &value) < 0 || plain_octal(h + 108, 8, &value) < 0 ||
        plain_octal(h + 116, 8, &value) < 0 || plain_octal(h + 136, 12, &value) < 0 ||
        plain_octal(h + 124, 12, &header->size) < 0)
        return -1;
    Py_ssize_t prefix_length = 0;
    if (memcmp(h + 257, "ustar\0", 6) == 0) {
        if (memcmp(h + 508, "tar\0", 4) == 0)
            return -1; /* star: a shorter prefix and times */
        const unsigned char *prefix_end = memchr(h + 345, 0, 155);
        prefix_length = prefix_end ? prefix_end - (h + 345) : 155;
    }
    else if (memcmp(h + 257, "ustar  \0", 8) == 0) {
        if (h[345] != 0 || h[357] != 0)
            return -1; /* GNU access or change time (or an old ustar prefix there) */
    }
    else {
        return -1; /* v7, or unknown */
    }
    if (!device_field_ok(h + 329) || !device_field_ok(h + 337))
        return -1;
    const unsigned char *name_end = memchr(h, 0, 100);
    Py_ssize_t name_length = name_end ? name_end - h : 100;
    char *out = header->name;
    if (prefix_length) {
        memcpy(out, h + 345, (size_t)prefix_length);
        out[prefix_length] = '/';
        out += prefix_length + 1;
    }
    memcpy(out, h, (size_t)name_length);
    header->name_length = (out - header->name) + name_length;
    header->typeflag = h[156];
    return 0;
}

/* The pax records the fast path reads: path and size (last one wins); -1 for anything it leaves to Python.
 *
 * Left to Python: a NUL anywhere, a length that is not plain digits or does
 * not fit, a record without "key=" or newline, GNU sparse records, a size, uid
 * or gid that is not plain digits (at most 18), a time that is not digits with
 * an optional fraction. */
static int
pax_records(const unsigned char *data, Py_ssize_t size, const unsigned char **path, Py_ssize_t *path_length,
            long long *pax_size, int *has_size)
{
    if (memchr(data, 0, (size_t)size) != NULL)
        return -1;
    Py_ssize_t pos = 0;
    while (pos < size) {
        const unsigned char *key, *value;
        Py_ssize_t key_length, value_length;
        Py_ssize_t next = pax_record(data, size, pos, 8, &key, &key_length, &value, &value_length);
        if (next < 0)
            return -1;
        if (key_length >= 11 && memcmp(key, "GNU.sparse.", 11) == 0)
            return -1;
        int is_size = key_length == 4 && memcmp(key, "size", 4) == 0;
        if (is_size || (key_length == 3 && (memcmp(key, "uid", 3) == 0 || memcmp(key, "gid", 3) == 0))) {
            if (value_length > 18)
                return -1;
            long long number = 0;
            for (Py_ssize_t k = 0; k < value_length; k++) {
                if (value[k] < '0' || value[k] > '9')
                    return -1;
                number = number * 10 + (value[k] - '0');
            }
            if (is_size) {
                *has_size = value_length > 0;
                *pax_size = number;
            }
        }
        else if (key_length == 5 && (memcmp(key, "mtime", 5) == 0 || memcmp(key, "atime", 5) == 0 ||
                                     memcmp(key, "ctime", 5) == 0)) {
            Py_ssize_t k = 0;
            while (k < value_length && value[k] >= '0' && value[k] <= '9')
                k++;
            if (value_length && k == 0)
                return -1;
            if (k < value_length) {
                if (value[k] != '.')
                    return -1;
                for (k++; k < value_length; k++) {
                    if (value[k] < '0' || value[k] > '9')
                        return -1;
                }
            }
        }
        else if (key_length == 4 && memcmp(key, "path", 4) == 0) {
            *path = value;
            *path_length = value_length;
        }
        pos = next;
    }
    return 0;
}

/* Whether a JSON string of these bytes is the bytes themselves (printable ASCII but " & < > \). */
static int
plain_name(const char *name, Py_ssize_t length)
{
    if (length == 0)
        return 0;
    for (Py_ssize_t i = 0; i < length; i++) {
        unsigned char c = (unsigned char)name[i];
        if (c < 0x20 || c > 0x7e || c == '"' || c == '&' || c == '<' || c == '>' || c == '\\')
            return 0;
    }
    return 1;
}

/* The name as Go's filepath.Clean gives it, for names whose cleaning only drops "./" in front and "/" at
 * the end; NULL (and *length untouched) for any other (absolute, "//", "." or ".." components, empty). */
static const char *
clean_name(const char *name, Py_ssize_t *length)
{
    Py_ssize_t start = 0, end = *length;
    if (end == 0 || name[0] == '/')
        return NULL;
    while (end - start >= 2 && name[start] == '.' && name[start + 1] == '/')
        start += 2;
    while (end > start && name[end - 1] == '/')
        end--;
    if (!plain_components(name + start, end - start))
        return NULL;
    *length = end - start;
    return name + start;
}

/* A segment entry of `bytes`. */
static int
segment_line(Buffer *lines, const Buffer *bytes, long long position)
{
    if (buffer_text(lines, "{\"type\":2,\"payload\":\"") < 0 ||
        buffer_base64(lines, (const unsigned char *)bytes->data, bytes->length) < 0 ||
        buffer_text(lines, "\",\"position\":") < 0 || buffer_number(lines, position) < 0 ||
        buffer_text(lines, "}\n") < 0)
        return -1;
    return 0;
}

/* A file entry: with a size and CRC-64 (big-endian) for content, else without. */
static int
file_line(Buffer *lines, const char *name, Py_ssize_t name_length, long long size, unsigned long long crc,
          long long position)
{
    if (buffer_text(lines, "{\"type\":1,\"name\":\"") < 0 || buffer_add(lines, name, name_length) < 0)
        return -1;
    if (size) {
        unsigned char digest[8];
        for (int i = 0; i < 8; i++)
            digest[i] = (unsigned char)(crc >> (56 - 8 * i));
        if (buffer_text(lines, "\",\"size\":") < 0 || buffer_number(lines, size) < 0 ||
            buffer_text(lines, ",\"payload\":\"") < 0 || buffer_base64(lines, digest, 8) < 0 ||
            buffer_text(lines, "\",\"position\":") < 0)
            return -1;
    }
    else if (buffer_text(lines, "\",\"payload\":null,\"position\":") < 0) {
        return -1;
    }
    if (buffer_number(lines, position) < 0 || buffer_text(lines, "}\n") < 0)
        return -1;
    return 0;
}

/* crc_update(crc, view of bytes) -> the CRC-64 continued over them. */
static int
update_crc(PyObject *crc_update, unsigned long long *crc, const unsigned char *bytes, Py_ssize_t length)
{
    PyObject *view = PyMemoryView_FromMemory((char *)bytes, length, PyBUF_READ);
    if (view == NULL)
        return -1;
    PyObject *result = PyObject_CallFunction(crc_update, "KO", *crc, view);
    Py_DECREF(view);
    if (result == NULL)
        return -1;
    *crc = PyLong_AsUnsignedLongLong(result);
    Py_DECREF(result);
    return PyErr_Occurred() ? -1 : 0;
}

PyDoc_STRVAR(segment_members_doc,
"segment_members(data, pos, pending, seen, position, crc_update, /)\n"
"--\n"
"\n"
"Record the members of the common shape that start at data[pos:] (a header\n"
"boundary, nothing waiting for a member) as tar-split entries.  `pending`\n"
"(bytearray) holds the bytes of the next segment so far and is updated in\n"
"place; `seen` (set) holds the cleaned member paths and gets the new ones;\n"
"`position` is the next entry's position; crc_update(crc, data) continues a\n"
"CRC-64/GO-ISO.  Return (pos, lines, position, header_pos, state, name, size,\n"
"remaining, crc): how far it read, the JSON lines written and the next\n"
"position, where the last header it took starts, and what follows: state 0\n"
"(a header), 1 (the content of member `name` of `size` bytes, `remaining`\n"
"to go, CRC so far `crc`) or 3 (`remaining` bytes of padding).  It stops\n"
"before the first member it does not take; pos is unchanged when it took\n"
"none.");

static PyObject *
segment_members(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 6) {
        PyErr_SetString(PyExc_TypeError, "segment_members() takes 6 arguments");
        return NULL;
    }
    Py_ssize_t pos = PyLong_AsSsize_t(args[1]);
    long long position = PyLong_AsLongLong(args[4]);
    if (PyErr_Occurred())
        return NULL;
    PyObject *pending = args[2], *seen = args[3], *crc_update = args[5];
    if (!PyByteArray_Check(pending) || !PySet_Check(seen)) {
        PyErr_SetString(PyExc_TypeError, "segment_members() takes a bytearray and a set");
        return NULL;
    }
    Py_buffer input;
    if (PyObject_GetBuffer(args[0], &input, PyBUF_SIMPLE) < 0)
        return NULL;
    const unsigned char *data = input.buf;
    Py_ssize_t end = input.len;
    if (pos < 0 || pos > end) {
        PyBuffer_Release(&input);
        PyErr_SetString(PyExc_ValueError, "segment_members(): pos out of range");
        return NULL;
    }

    Buffer segment = {NULL, 0, 0}, lines = {NULL, 0, 0};
    PyObject *result = NULL, *name_bytes = NULL;
    Py_ssize_t start = pos, header_pos = pos, remaining = 0;
    int state = STATE_HEADER;
    long long size = 0;
    unsigned long long crc = 0;
    Header header, extension;

    if (buffer_add(&segment, PyByteArray_AS_STRING(pending), PyByteArray_GET_SIZE(pending)) < 0)
        goto done;
    while (end - pos >= BLOCK) {
        const unsigned char *block = data + pos;
        Py_ssize_t member = pos; /* where this member's header (not its pax header) starts */
        if (go_header(block, &header) < 0)
            break; /* a zero block too: its checksum cannot match */
        const unsigned char *path = NULL;
        Py_ssize_t path_length = 0;
        long long pax_size = 0;
        int has_size = 0;
        if (header.typeflag == 'x') {
            extension = header;
            if (extension.size > MAX_SPECIAL)
                break;
            Py_ssize_t records = pos + BLOCK, padded = (Py_ssize_t)((extension.size + BLOCK - 1) / BLOCK * BLOCK);
            member = records + padded;
            if (end - member < BLOCK)
                break;
            if (pax_records(data + records, (Py_ssize_t)extension.size, &path, &path_length, &pax_size, &has_size) < 0)
                break;
            if (go_header(data + member, &header) < 0)
                break;
        }
        int type = header.typeflag;
        if (!(type == '\0' || (type >= '0' && type <= '7')))
            break; /* extension headers after all, sparse, GNU dump directory, volume label, unknown */
        const char *name = header.name;
        Py_ssize_t name_length = header.name_length;
        if (path != NULL && path_length > 0) {
            name = (const char *)path;
            name_length = path_length;
        }
        size = has_size ? pax_size : header.size;
        if ((type >= '1' && type <= '6') || (type == '\0' && name_length && name[name_length - 1] == '/'))
            size = 0;
        if (!plain_name(name, name_length))
            break;
        if (has_whiteout_marker(name, name_length))
            break; /* content extraction may not write: Python's rules */
        Py_ssize_t key_length = name_length;
        const char *key = clean_name(name, &key_length);
        if (key == NULL)
            break;
        PyObject *key_bytes = PyBytes_FromStringAndSize(key, key_length);
        if (key_bytes == NULL)
            goto done;
        int repeated = PySet_Contains(seen, key_bytes);
        if (repeated == 0)
            repeated = PySet_Add(seen, key_bytes) < 0 ? -1 : 0;
        Py_DECREF(key_bytes);
        if (repeated < 0)
            goto done;
        if (repeated)
            break; /* a path seen before: no file entry, Python's rules */

        /* Taken: its segment holds everything since the last content, up to and with its header. */
        pos = member + BLOCK;
        header_pos = member;
        if (buffer_add(&segment, block, pos - (block - data)) < 0 || segment_line(&lines, &segment, position++) < 0)
            goto done;
        segment.length = 0;
        if (size == 0) {
            if (file_line(&lines, name, name_length, 0, 0, position++) < 0)
                goto done;
            continue;
        }
        Py_ssize_t take = end - pos < size ? end - pos : (Py_ssize_t)size;
        crc = 0;
        if (update_crc(crc_update, &crc, data + pos, take) < 0)
            goto done;
        pos += take;
        if (take < size) {
            name_bytes = PyBytes_FromStringAndSize(name, name_length);
            if (name_bytes == NULL)
                goto done;
            state = STATE_DATA;
            remaining = (Py_ssize_t)size - take;
            break;
        }
        if (file_line(&lines, name, name_length, size, crc, position++) < 0)
            goto done;
        Py_ssize_t padding = (Py_ssize_t)(-size & (BLOCK - 1));
        Py_ssize_t here = end - pos < padding ? end - pos : padding;
        if (buffer_add(&segment, data + pos, here) < 0)
            goto done;
        pos += here;
        if (here < padding) {
            state = STATE_PAD;
            remaining = padding - here;
            break;
        }
    }
    if (pos != start) {
        if (PyByteArray_Resize(pending, segment.length) < 0)
            goto done;
        if (segment.length)
            memcpy(PyByteArray_AS_STRING(pending), segment.data, (size_t)segment.length);
    }
    result = Py_BuildValue("(ny#LniOLnK)", pos, lines.data ? lines.data : "", lines.length, position, header_pos,
                           state, name_bytes ? name_bytes : Py_None, size, remaining, crc);
done:
    Py_XDECREF(name_bytes);
    PyMem_Free(segment.data);
    PyMem_Free(lines.data);
    PyBuffer_Release(&input);
    return result;
}

static PyMethodDef methods[] = {
    {"segment_members", (PyCFunction)(void (*)(void))segment_members, METH_FASTCALL, segment_members_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    "layerstore_accel._tarsplit",
    "Common tar members recorded as tar-split entries in one call (see segment_members).",
    -1,
    methods,
};

PyMODINIT_FUNC
PyInit__tarsplit(void)
{
    return PyModule_Create(&module);
}
