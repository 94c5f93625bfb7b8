/* Rules for tar header blocks that the decoders of this distribution share.
 *
 * Both accept only the common shape and leave everything else to
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

#endif
