#!/usr/bin/env python3
"""make_corpus.py: writes the regression corpus of the safetensors parser (tests/fuzz/corpus/).

Standard library only. Each file's name says what the parser must do with it: ok_* files must open
(and every tensor of a supported dtype must read), bad_* files must be rejected with an error (never
a crash). Crashers found by the fuzzer are added by hand as bad_crash-* or ok_crash-*.
Where this parser is deliberately stricter than the reference implementation (which accepts them),
the file says so in its name: bad_strict_* (NUL in a name, duplicate metadata keys, more than 8 dims).
Run: python3 tests/fuzz/make_corpus.py
"""
import json
import os
import struct

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")


def raw(header_bytes, data=b"", length=None, pad=True):
    if pad:
        header_bytes += b" " * ((8 - len(header_bytes) % 8) % 8)
    n = len(header_bytes) if length is None else length
    return struct.pack("<Q", n) + header_bytes + data


def st(tensors, data, meta=None, **kw):
    h = {}
    if meta is not None:
        h["__metadata__"] = meta
    h.update(tensors)
    return raw(json.dumps(h, separators=(",", ":")).encode(), data, **kw)


def t(dtype, shape, a, b):
    return {"dtype": dtype, "shape": shape, "data_offsets": [a, b]}


F = {}
# ---- valid files ----
F["ok_empty"] = st({}, b"")
F["ok_one_f32"] = st({"w": t("F32", [2, 2], 0, 16)}, struct.pack("<4f", 1, 2, 3, 4))
F["ok_all_dtypes"] = st({
    "f64": t("F64", [2], 0, 16), "i64": t("I64", [2], 16, 32), "f32": t("F32", [2], 32, 40),
    "i32": t("I32", [2], 40, 48), "bf16": t("BF16", [2], 48, 52), "f16": t("F16", [2], 52, 56),
    "u8": t("U8", [2], 56, 58), "bool": t("BOOL", [2], 58, 60)},
    struct.pack("<2d2q2f2i", 1.5, -2, 3, -4, 0.25, 8, -9, 10) + bytes([0x80, 0x3F, 0x00, 0xC0])
    + bytes([0x00, 0x3C, 0x00, 0xC0]) + bytes([7, 255]) + bytes([1, 0]))
F["ok_metadata"] = st({"x": t("U8", [3], 0, 3)}, b"abc", meta={"format": "pt", "note": "h\u00e9 \"q\""})
F["ok_null_metadata"] = raw(b'{"__metadata__":null,"x":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}', b"a")
F["ok_scalar_and_empty"] = st({"s": t("F32", [], 0, 4), "e": t("F32", [0, 3], 4, 4),
                               "e2": t("I64", [5, 0], 4, 4)}, struct.pack("<f", 7))
F["ok_unsupported_dtype_i16"] = st({"h": t("I16", [2], 0, 4), "x": t("U8", [1], 4, 5)}, b"\x01\x00\x02\x00z")
F["ok_unicode_names"] = raw('{"\\u00e9t\\u00e9":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},'
                            '"\U0001F600":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}}'.encode(), b"ab")
F["ok_extra_field"] = raw(b'{"x":{"dtype":"U8","shape":[1],"data_offsets":[0,1],"extra":[1,{"a":null}]}}', b"q")
F["ok_unpadded_trailing_whitespace"] = raw(b'{"x":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}\r\n\t', b"q", pad=False)
F["ok_leading_whitespace"] = raw(b' \n{"x":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}', b"q")
F["ok_eight_dims"] = st({"x": t("U8", [1] * 8, 0, 1)}, b"q")
F["ok_offsets_out_of_key_order"] = st({"a": t("U8", [1], 1, 2), "b": t("U8", [1], 0, 1)}, b"ba")
# ---- malformed files ----
F["bad_empty_file"] = b""
F["bad_short_file"] = b"\x08\x00\x00"
F["bad_header_beyond_file"] = struct.pack("<Q", 1000) + b"{}      "
F["bad_header_length_huge"] = struct.pack("<Q", 2**63 + 5) + b"{}      "
F["bad_header_length_zero"] = struct.pack("<Q", 0)
F["bad_not_object_start"] = raw(b'["x"]')
F["bad_json_trailing_comma"] = raw(b'{"x":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},}', b"q")
F["bad_json_unterminated"] = raw(b'{"x":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}', b"q")
F["bad_json_comment"] = raw(b'{/*c*/"x":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}', b"q")
F["bad_json_nan"] = raw(b'{"x":{"dtype":"U8","shape":[NaN],"data_offsets":[0,1]}}', b"q")
F["bad_json_leading_zero"] = raw(b'{"x":{"dtype":"U8","shape":[01],"data_offsets":[0,1]}}', b"q")
F["bad_json_control_char"] = raw(b'{"x\x01":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}', b"q")
F["bad_json_invalid_utf8"] = raw(b'{"x\xff":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}', b"q")
F["bad_json_overlong_utf8"] = raw(b'{"\xc0\xaf":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}', b"q")
F["bad_json_lone_surrogate"] = raw(b'{"\\ud800":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}', b"q")
F["bad_json_bad_escape"] = raw(b'{"\\q":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}', b"q")
F["bad_json_deep_nesting"] = raw(b'{"x":' + b"[" * 200 + b"]" * 200 + b"}")
F["bad_json_garbage_after"] = raw(b'{} {}', pad=True)
F["bad_strict_nul_in_name"] = raw(b'{"a\\u0000b":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}', b"q")
F["bad_header_is_array"] = raw(b'{"x":[1,2]}')
F["bad_unknown_dtype"] = st({"x": t("F128", [1], 0, 16)}, b"\0" * 16)
F["bad_dtype_not_string"] = raw(b'{"x":{"dtype":4,"shape":[1],"data_offsets":[0,4]}}', b"\0" * 4)
F["bad_missing_shape"] = raw(b'{"x":{"dtype":"F32","data_offsets":[0,4]}}', b"\0" * 4)
F["bad_duplicate_field"] = raw(b'{"x":{"dtype":"F32","dtype":"F32","shape":[1],"data_offsets":[0,4]}}', b"\0" * 4)
F["bad_offsets_out_of_range"] = st({"x": t("F32", [2], 0, 8)}, b"\0" * 4)
F["bad_offsets_reversed"] = st({"x": t("U8", [0], 4, 0)}, b"\0" * 4)
F["bad_offsets_overlap"] = st({"a": t("F32", [2], 0, 8), "b": t("F32", [2], 4, 12)}, b"\0" * 12)
F["bad_offsets_gap"] = st({"a": t("F32", [1], 0, 4), "b": t("F32", [1], 8, 12)}, b"\0" * 12)
F["bad_offsets_not_from_zero"] = st({"a": t("F32", [1], 4, 8)}, b"\0" * 8)
F["bad_offsets_three"] = raw(b'{"x":{"dtype":"U8","shape":[1],"data_offsets":[0,1,1]}}', b"q")
F["bad_offsets_negative"] = raw(b'{"x":{"dtype":"U8","shape":[1],"data_offsets":[-1,0]}}', b"q")
F["bad_offsets_float"] = raw(b'{"x":{"dtype":"U8","shape":[1],"data_offsets":[0,1.0]}}', b"q")
F["bad_offsets_huge"] = raw(b'{"x":{"dtype":"U8","shape":[1],"data_offsets":[0,99999999999999999999]}}', b"q")
F["bad_byte_length_mismatch"] = st({"x": t("F32", [2, 3], 0, 20)}, b"\0" * 20)
F["bad_duplicate_name"] = raw(b'{"x":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},'
                              b'"x":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}}', b"qq")
F["bad_strict_too_many_dims"] = st({"x": t("U8", [1] * 9, 0, 1)}, b"q")
F["bad_negative_dim"] = raw(b'{"x":{"dtype":"U8","shape":[-1],"data_offsets":[0,1]}}', b"q")
F["bad_shape_overflow"] = st({"x": t("F64", [2**62, 2**62], 0, 8)}, b"\0" * 8)
F["bad_shape_not_array"] = raw(b'{"x":{"dtype":"U8","shape":"1","data_offsets":[0,1]}}', b"q")
F["bad_trailing_data"] = st({"x": t("U8", [1], 0, 1)}, b"qq")
F["bad_truncated_data"] = st({"x": t("F32", [4], 0, 16)}, b"\0" * 16)[:-3]
F["bad_metadata_not_string"] = st({"x": t("U8", [1], 0, 1)}, b"q", meta={"epoch": 3})
F["bad_metadata_array"] = raw(b'{"__metadata__":["a"],"x":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}', b"q")
F["bad_strict_metadata_duplicate_key"] = raw(b'{"__metadata__":{"a":"1","a":"2"}}')
F["bad_metadata_twice"] = raw(b'{"__metadata__":{},"__metadata__":{}}')
F["bad_entry_not_object"] = raw(b'{"x":"F32"}')

os.makedirs(HERE, exist_ok=True)
for name, data in sorted(F.items()):
    with open(os.path.join(HERE, name + ".safetensors"), "wb") as f:
        f.write(data)
print(f"wrote {len(F)} files to {HERE}")
