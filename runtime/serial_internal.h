/* serial_internal.h: private interface of the serialization code: the strict JSON parser
 * (runtime/json.c) that reads safetensors headers, and the fault-injection hook the C tests use to
 * prove that a save failing midway leaves the previous file intact (runtime/safetensors.c). */
#ifndef RT_SERIAL_INTERNAL_H
#define RT_SERIAL_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

/* ================================================================================================
 * JSON (RFC 8259, strict: no comments, no trailing commas, no NaN, UTF-8 checked, depth limited)
 * ============================================================================================== */

typedef enum rt_json_type {
    RT_JSON_NULL = 0,
    RT_JSON_BOOL,
    RT_JSON_NUMBER,
    RT_JSON_STRING,
    RT_JSON_ARRAY,
    RT_JSON_OBJECT
} rt_json_type;

/* A parsed value. Arrays and objects hold their members as a singly linked list (child, next);
 * object members carry their key. Strings are NUL-terminated copies; len excludes the NUL (a string
 * may hold an escaped \u0000, so len is authoritative). */
typedef struct rt_json {
    int type;
    int boolean;
    int is_int;   /* a number written without fraction or exponent that fits int64 */
    int64_t ival; /* valid when is_int */
    double dval;  /* any number */
    char *str;
    size_t len;
    char *key; /* object members: the key (NUL-terminated) */
    size_t key_len;
    size_t count; /* arrays and objects: number of members */
    struct rt_json *child;
    struct rt_json *next;
} rt_json;

#define RT_JSON_MAX_DEPTH 64

/* Parse text[0..n) as one JSON value followed only by whitespace. On failure returns NULL and
 * writes "what was wrong at byte N" into err. */
rt_json *rt_json_parse(const char *text, size_t n, char *err, size_t errlen);
void rt_json_free(rt_json *v);
const char *rt_json_type_name(int type);

/* True when s[0..n) is well-formed UTF-8 (no overlongs, no surrogates, <= U+10FFFF). */
int rt_utf8_valid(const char *s, size_t n);

/* ================================================================================================
 * Test hooks
 * ============================================================================================== */

/* When >= 0, rt_safetensors_save fails with RT_ERR_IO after writing this many bytes of the
 * temporary file (simulating a full disk or a crash before the rename). -1 (the default) disables
 * it. */
extern int64_t rt_safetensors_fail_after_bytes;

#endif /* RT_SERIAL_INTERNAL_H */
