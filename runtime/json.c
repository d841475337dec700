/* json.c: a small strict JSON parser (RFC 8259) for safetensors headers. Untrusted input: every
 * read is bounds-checked, nesting is limited to RT_JSON_MAX_DEPTH, strings must be valid UTF-8,
 * and any deviation from the grammar (comments, trailing commas, NaN, leading zeros, control
 * characters in strings, lone surrogates) is an error that says what was expected and where. */
#include "serial_internal.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct parser {
    const unsigned char *s;
    size_t n, pos;
    char *err;
    size_t errlen;
    int failed;
} parser;

static void fail(parser *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void fail(parser *p, const char *fmt, ...) {
    if (p->failed) return;
    p->failed = 1;
    char what[160];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    snprintf(p->err, p->errlen, "%s at byte %zu", what, p->pos);
}

const char *rt_json_type_name(int type) {
    switch (type) {
    case RT_JSON_NULL:
        return "null";
    case RT_JSON_BOOL:
        return "boolean";
    case RT_JSON_NUMBER:
        return "number";
    case RT_JSON_STRING:
        return "string";
    case RT_JSON_ARRAY:
        return "array";
    case RT_JSON_OBJECT:
        return "object";
    }
    return "?";
}

/* ---- UTF-8 ---------------------------------------------------------------------------------- */

/* Length of the well-formed UTF-8 sequence at s[0..n), or 0 if it is not one. */
static size_t utf8_seq(const unsigned char *s, size_t n) {
    unsigned c = s[0];
    if (c < 0x80) return 1;
    size_t len;
    unsigned min;
    unsigned cp;
    if (c >= 0xC2 && c <= 0xDF)
        len = 2, min = 0x80, cp = c & 0x1F;
    else if (c >= 0xE0 && c <= 0xEF)
        len = 3, min = 0x800, cp = c & 0x0F;
    else if (c >= 0xF0 && c <= 0xF4)
        len = 4, min = 0x10000, cp = c & 0x07;
    else
        return 0;
    if (len > n) return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80) return 0;
        cp = (cp << 6) | (s[i] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
    return len;
}

int rt_utf8_valid(const char *s, size_t n) {
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        size_t k = utf8_seq(u + i, n - i);
        if (!k) return 0;
        i += k;
    }
    return 1;
}

/* ---- lexing helpers -------------------------------------------------------------------------- */

static void skip_ws(parser *p) {
    while (p->pos < p->n) {
        unsigned char c = p->s[p->pos];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r') break;
        p->pos++;
    }
}

static int peek(parser *p) {
    return p->pos < p->n ? p->s[p->pos] : -1;
}

static const char *char_desc(int c, char *buf, size_t n) {
    if (c < 0) return "end of header";
    if (c >= 0x20 && c < 0x7F)
        snprintf(buf, n, "'%c'", c);
    else
        snprintf(buf, n, "byte 0x%02X", (unsigned)c);
    return buf;
}

static int hex4(parser *p, unsigned *out) {
    if (p->n - p->pos < 4) {
        fail(p, "truncated \\u escape");
        return 0;
    }
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        int c = p->s[p->pos + i], d;
        if (c >= '0' && c <= '9')
            d = c - '0';
        else if (c >= 'a' && c <= 'f')
            d = c - 'a' + 10;
        else if (c >= 'A' && c <= 'F')
            d = c - 'A' + 10;
        else {
            p->pos += (size_t)i;
            fail(p, "bad hex digit in \\u escape");
            return 0;
        }
        v = v * 16 + (unsigned)d;
    }
    p->pos += 4;
    *out = v;
    return 1;
}

static size_t put_utf8(char *o, unsigned cp) {
    if (cp < 0x80) {
        o[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (char)(0xC0 | (cp >> 6));
        o[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | (cp >> 12));
        o[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | (cp >> 18));
    o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    o[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Parse a string starting at the opening quote into a new NUL-terminated buffer. The decoded form
 * is never longer than the source, so one allocation of the raw length suffices. */
static char *parse_string(parser *p, size_t *len_out) {
    p->pos++; /* opening quote */
    size_t start = p->pos, end = start;
    /* find the closing quote to size the buffer */
    while (end < p->n && p->s[end] != '"')
        end += p->s[end] == '\\' ? 2 : 1;
    if (end >= p->n) {
        fail(p, "unterminated string");
        return NULL;
    }
    char *out = malloc(end - start + 1);
    if (!out) {
        fail(p, "out of memory");
        return NULL;
    }
    size_t o = 0;
    while (p->pos < end) {
        unsigned char c = p->s[p->pos];
        if (c < 0x20) {
            fail(p, "control character 0x%02X in string (must be escaped)", c);
            free(out);
            return NULL;
        }
        if (c == '\\') {
            p->pos++;
            int e = p->s[p->pos++];
            switch (e) {
            case '"':
                out[o++] = '"';
                break;
            case '\\':
                out[o++] = '\\';
                break;
            case '/':
                out[o++] = '/';
                break;
            case 'b':
                out[o++] = '\b';
                break;
            case 'f':
                out[o++] = '\f';
                break;
            case 'n':
                out[o++] = '\n';
                break;
            case 'r':
                out[o++] = '\r';
                break;
            case 't':
                out[o++] = '\t';
                break;
            case 'u': {
                unsigned cp;
                if (!hex4(p, &cp)) {
                    free(out);
                    return NULL;
                }
                if (cp >= 0xD800 && cp <= 0xDBFF) {
                    unsigned lo;
                    if (p->n - p->pos < 2 || p->s[p->pos] != '\\' || p->s[p->pos + 1] != 'u') {
                        fail(p, "high surrogate \\u%04X without a low surrogate", cp);
                        free(out);
                        return NULL;
                    }
                    p->pos += 2;
                    if (!hex4(p, &lo)) {
                        free(out);
                        return NULL;
                    }
                    if (lo < 0xDC00 || lo > 0xDFFF) {
                        fail(p, "high surrogate \\u%04X followed by \\u%04X, not a low surrogate",
                             cp, lo);
                        free(out);
                        return NULL;
                    }
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
                    fail(p, "lone low surrogate \\u%04X", cp);
                    free(out);
                    return NULL;
                }
                /* 6 source bytes (or 12 for a pair) always cover the <= 4 output bytes */
                o += put_utf8(out + o, cp);
                break;
            }
            default: {
                char b[16];
                p->pos--;
                fail(p, "bad escape \\%s in string", char_desc(e, b, sizeof b));
                free(out);
                return NULL;
            }
            }
            continue;
        }
        size_t k = utf8_seq(p->s + p->pos, end - p->pos);
        if (!k) {
            fail(p, "invalid UTF-8 in string");
            free(out);
            return NULL;
        }
        memcpy(out + o, p->s + p->pos, k);
        o += k;
        p->pos += k;
    }
    p->pos = end + 1;
    out[o] = 0;
    *len_out = o;
    return out;
}

static int is_digit(int c) {
    return c >= '0' && c <= '9';
}

static void parse_number(parser *p, rt_json *v) {
    size_t start = p->pos;
    int neg = 0, integral = 1;
    if (peek(p) == '-') {
        neg = 1;
        p->pos++;
    }
    if (!is_digit(peek(p))) {
        fail(p, "expected a digit");
        return;
    }
    if (peek(p) == '0') {
        p->pos++;
        if (is_digit(peek(p))) {
            fail(p, "leading zero in number");
            return;
        }
    } else {
        while (is_digit(peek(p)))
            p->pos++;
    }
    if (peek(p) == '.') {
        integral = 0;
        p->pos++;
        if (!is_digit(peek(p))) {
            fail(p, "expected a digit after the decimal point");
            return;
        }
        while (is_digit(peek(p)))
            p->pos++;
    }
    if (peek(p) == 'e' || peek(p) == 'E') {
        integral = 0;
        p->pos++;
        if (peek(p) == '+' || peek(p) == '-') p->pos++;
        if (!is_digit(peek(p))) {
            fail(p, "expected a digit in the exponent");
            return;
        }
        while (is_digit(peek(p)))
            p->pos++;
    }
    size_t len = p->pos - start;
    char buf[64];
    v->type = RT_JSON_NUMBER;
    if (len < sizeof buf) {
        memcpy(buf, p->s + start, len);
        buf[len] = 0;
        v->dval = strtod(buf, NULL);
    } else {
        v->dval = neg ? -1e308 : 1e308; /* absurdly long: only integrality matters to callers */
    }
    if (integral) {
        /* exact int64 with overflow detection (strtoll would need a copy anyway) */
        uint64_t acc = 0, limit = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
        int ok = 1;
        for (size_t i = start + (size_t)neg; i < p->pos; i++) {
            uint64_t d = (uint64_t)(p->s[i] - '0');
            if (acc > (limit - d) / 10) {
                ok = 0;
                break;
            }
            acc = acc * 10 + d;
        }
        if (ok) {
            v->is_int = 1;
            v->ival =
                neg ? (acc == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)acc) : (int64_t)acc;
        }
    }
}

static int match_word(parser *p, const char *w) {
    size_t k = strlen(w);
    if (p->n - p->pos >= k && memcmp(p->s + p->pos, w, k) == 0) {
        p->pos += k;
        return 1;
    }
    return 0;
}

static rt_json *parse_value(parser *p, int depth);

static rt_json *new_value(parser *p) {
    rt_json *v = calloc(1, sizeof *v);
    if (!v) fail(p, "out of memory");
    return v;
}

static void parse_members(parser *p, rt_json *v, int depth, int is_object) {
    int close = is_object ? '}' : ']';
    p->pos++; /* opening bracket */
    skip_ws(p);
    if (peek(p) == close) {
        p->pos++;
        return;
    }
    rt_json **tail = &v->child;
    for (;;) {
        skip_ws(p);
        char *key = NULL;
        size_t key_len = 0;
        if (is_object) {
            if (peek(p) != '"') {
                char b[16];
                fail(p, "expected a string key, got %s", char_desc(peek(p), b, sizeof b));
                return;
            }
            key = parse_string(p, &key_len);
            if (!key) return;
            skip_ws(p);
            if (peek(p) != ':') {
                char b[16];
                fail(p, "expected ':' after an object key, got %s",
                     char_desc(peek(p), b, sizeof b));
                free(key);
                return;
            }
            p->pos++;
        }
        rt_json *m = parse_value(p, depth + 1);
        if (!m) {
            free(key);
            return;
        }
        m->key = key;
        m->key_len = key_len;
        *tail = m;
        tail = &m->next;
        v->count++;
        skip_ws(p);
        int c = peek(p);
        if (c == ',') {
            p->pos++;
            skip_ws(p);
            if (peek(p) == close) {
                fail(p, "trailing comma");
                return;
            }
            continue;
        }
        if (c == close) {
            p->pos++;
            return;
        }
        char b[16];
        fail(p, "expected ',' or '%c', got %s", close, char_desc(c, b, sizeof b));
        return;
    }
}

static rt_json *parse_value(parser *p, int depth) {
    if (depth > RT_JSON_MAX_DEPTH) {
        fail(p, "nesting deeper than %d levels", RT_JSON_MAX_DEPTH);
        return NULL;
    }
    skip_ws(p);
    rt_json *v = new_value(p);
    if (!v) return NULL;
    int c = peek(p);
    switch (c) {
    case '{':
        v->type = RT_JSON_OBJECT;
        parse_members(p, v, depth, 1);
        break;
    case '[':
        v->type = RT_JSON_ARRAY;
        parse_members(p, v, depth, 0);
        break;
    case '"':
        v->type = RT_JSON_STRING;
        v->str = parse_string(p, &v->len);
        break;
    case 't':
    case 'f':
        v->type = RT_JSON_BOOL;
        v->boolean = c == 't';
        if (!match_word(p, c == 't' ? "true" : "false")) fail(p, "expected true or false");
        break;
    case 'n':
        v->type = RT_JSON_NULL;
        if (!match_word(p, "null")) fail(p, "expected null");
        break;
    default:
        if (c == '-' || is_digit(c)) {
            parse_number(p, v);
        } else {
            char b[16];
            fail(p, "expected a value, got %s", char_desc(c, b, sizeof b));
        }
    }
    if (p->failed) {
        rt_json_free(v);
        return NULL;
    }
    return v;
}

rt_json *rt_json_parse(const char *text, size_t n, char *err, size_t errlen) {
    parser p = {(const unsigned char *)text, n, 0, err, errlen, 0};
    if (errlen) err[0] = 0;
    rt_json *v = parse_value(&p, 0);
    if (!v) return NULL;
    skip_ws(&p);
    if (p.pos != p.n) {
        char b[16];
        fail(&p, "unexpected %s after the end of the value", char_desc(peek(&p), b, sizeof b));
        rt_json_free(v);
        return NULL;
    }
    return v;
}

void rt_json_free(rt_json *v) {
    while (v) {
        rt_json *next = v->next;
        rt_json_free(v->child); /* depth is bounded by RT_JSON_MAX_DEPTH */
        free(v->str);
        free(v->key);
        free(v);
        v = next;
    }
}
