/* Rules for tar header blocks that the decoders of this distribution share.
 *
 * Each accepts only the common shape and leaves everything else to
 * layerstore's Python code, so these are deliberately narrower than what a
 * tar reader accepts.
 */
#ifndef LAYERSTORE_ACCEL_TARBLOCK_H
#define LAYERSTORE_ACCEL_TARBLOCK_H

#define BLOCK 512

/* A numeric field of the usual shape: octal digits first, then only spaces
 * and NULs.  Return 0 and the value in *out, or -1 for any other shape
 * (leading spaces, signs, base-256, no digit), left to the Python decoder.
 * A field is at most 12 bytes, so the value fits in 36 bits. */
static int
plain_octal(const unsigned char *field, int width, long long *out)
{
    long long value = 0;
    int i = 0;
    while (i < width && field[i] >= '0' && field[i] <= '7') {
        value = value * 8 + (field[i] - '0');
        i++;
    }
    if (i == 0)
        return -1;
    for (; i < width; i++) {
        if (field[i] != ' ' && field[i] != '\0')
            return -1;
    }
    *out = value;
    return 0;
}

/* Whether the checksum field (octal digits between spaces and NULs) equals the
 * unsigned byte sum of the block, the field counted as spaces.  The signed sum
 * (old Sun tar) is left to Python. */
static int
checksum_matches(const unsigned char *h)
{
    long long recorded;
    int i = 148;
    while (i < 156 && (h[i] == ' ' || h[i] == '\0'))
        i++;
    if (i == 156 || plain_octal(h + i, 156 - i, &recorded) < 0)
        return 0;
    long long sum = 8 * ' ';
    for (i = 0; i < 148; i++)
        sum += h[i];
    for (i = 156; i < BLOCK; i++)
        sum += h[i];
    return sum == recorded;
}

/* Whether every component of `name` (length n) is a real one: not empty (so no leading,
 * final or double slash, and not an empty name), not "." and not "..". */
static inline int
plain_components(const char *name, Py_ssize_t n)
{
    Py_ssize_t start = 0;
    for (Py_ssize_t i = 0; i <= n; i++) {
        if (i < n && name[i] != '/')
            continue;
        Py_ssize_t length = i - start;
        if (length == 0 || (name[start] == '.' && (length == 1 || (length == 2 && name[start + 1] == '.'))))
            return 0;
        start = i + 1;
    }
    return 1;
}

/* Whether `name` (length n) holds ".wh." anywhere: whiteouts and their metadata, which the
 * Python code handles. */
static inline int
has_whiteout_marker(const char *name, Py_ssize_t n)
{
    for (Py_ssize_t i = 0; i + 4 <= n; i++) {
        if (name[i] == '.' && memcmp(name + i, ".wh.", 4) == 0)
            return 1;
    }
    return 0;
}

/* The pax record ("%d %s=%s\n") that starts at data[pos] of data[0:size]: a length of 1 to
 * `max_digits` decimal digits, a space, a non-empty key up to the first '=', the value, and the
 * newline the length points at.  Set the key and value (pointers into data) and return the
 * offset after the record, or -1 for any other shape, left to the Python code.  What a key or
 * value may hold (NULs, say) is the caller's rule. */
static inline Py_ssize_t
pax_record(const unsigned char *data, Py_ssize_t size, Py_ssize_t pos, int max_digits, const unsigned char **key,
           Py_ssize_t *key_length, const unsigned char **value, Py_ssize_t *value_length)
{
    Py_ssize_t i = pos, length = 0;
    while (i < size && data[i] >= '0' && data[i] <= '9' && i - pos < max_digits)
        length = length * 10 + (data[i++] - '0');
    if (i == pos || i >= size || data[i] != ' ' || length < 5 || length > size - pos)
        return -1;
    Py_ssize_t end = pos + length - 1; /* the newline */
    if (data[end] != '\n' || end <= i + 1)
        return -1;
    const unsigned char *k = data + i + 1;
    const unsigned char *equals = memchr(k, '=', (size_t)(data + end - k));
    if (equals == NULL || equals == k)
        return -1;
    *key = k;
    *key_length = equals - k;
    *value = equals + 1;
    *value_length = data + end - (equals + 1);
    return end + 1;
}

#endif
