"""The codec's kept plans as straight-line code (`messages.compiled`): a bitmap's fields read,
or a field set's fields written, by a function generated for it from the same plan the loop in
`compile_decoder` / `compile_encoder` follows — the same checks in the same order, without the
loop's per-field unpacking and form dispatch. The code is generated from the spec's constants and
integer field numbers only, never from a message; whatever a generated function declines (or
raises on), the loop and then the pyiso8583 path decide, as before.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

# How a field's bytes become its value (decode) and its value becomes bytes (encode).
BINARY = 0  # bytes as they are (binary fields)
TEXT = 1  # ASCII text
TEXT_DIGITS = 2  # ASCII digits (numerics on an ASCII interface)
BCD = 3  # packed BCD: hex, checked to be digits (numerics on a BCD interface)
BCD_LEAD = 4  # odd digit count, pad nibble 0 first (right-aligned numerics)
BCD_TRAIL = 5  # odd digit count, pad nibble 0 last (left-aligned numerics)
NIBBLES = 6  # packed nibbles, any hex (track data on a BCD interface)
NIBBLES_LEAD = 7
NIBBLES_TRAIL = 8
BITMAP_BYTES = 8

# (bitmap bit, form, pad of an odd nibble count ("": declined; None: counted in bytes), fixed
# count or -1, length prefixes by count)
EncodeStep = tuple[int, int, "str | None", int, tuple["bytes | None", ...]]
FieldsWriter = Callable[[Mapping[int, Any], list[bytes]], "bytes | None"]

FieldsReader = Callable[[bytes, int, int], "dict[int, str | bytes] | None"]

# How each decode form's value is read from ``d`` (the field's bytes) into ``fields[n]``: the
# loop's branches of `compile_decoder`, written out per field.
_READ = {
    BINARY: ["fields[{n}] = d"],
    BCD: ["v = d.hex()", "if not v.isdigit(): return None", "fields[{n}] = v"],
    TEXT: ['fields[{n}] = d.decode("ascii")'],
    TEXT_DIGITS: ["if not d.isdigit(): return None", 'fields[{n}] = d.decode("ascii")'],
    BCD_LEAD: [
        "v = d.hex()",
        'if v[0] != "0" or not v.isdigit(): return None',
        "fields[{n}] = v[1:]",
    ],
    BCD_TRAIL: [
        "v = d.hex()",
        'if v[-1] != "0" or not v.isdigit(): return None',
        "fields[{n}] = v[:-1]",
    ],
    NIBBLES: ["fields[{n}] = d.hex().upper()"],
    NIBBLES_LEAD: ["v = d.hex().upper()", 'if v[0] != "0": return None', "fields[{n}] = v[1:]"],
    NIBBLES_TRAIL: ["v = d.hex().upper()", 'if v[-1] != "0": return None', "fields[{n}] = v[:-1]"],
}


def fields_reader(plan: tuple[tuple[int, int, Any], ...]) -> FieldsReader:
    """One bitmap's plan as a function of its own: ``(payload, at, size)`` → the fields read
    from ``at`` on, or ``None`` where the loop in `compile_decoder` declines (an exception
    raised declines there too). The same reads in the same order, without the loop's per-field
    unpacking and form dispatch (a third of a message's decoding). A field that runs past the
    payload is not checked where it is read: ``at`` then ends past ``size``, which declines."""
    lines = ["def read(payload, at, size):", "    fields = {}"]
    tables: dict[str, Any] = {}
    for number, width, table in plan:
        if width:
            tables[f"t{number}"] = table
            lines += [
                f"    count, form = t{number}[payload[at : at + {width}]]",
                f"    at += {width}",
                "    end = at + count",
                "    d = payload[at:end]",
                "    at = end",
            ]
            forms = sorted({form for _, form in table.values()})
            for index, form in enumerate(forms):
                test = "if" if index == 0 else "elif"
                lines.append(f"    {test} form == {form}:")
                lines += [f"        {line.format(n=number)}" for line in _READ[form]]
        else:
            count, form = table
            lines += [f"    end = at + {count}", "    d = payload[at:end]", "    at = end"]
            lines += [f"    {line.format(n=number)}" for line in _READ[form]]
    lines += ["    if at != size: return None", "    return fields"]
    namespace: dict[str, Any] = dict(tables)
    reader: FieldsReader = defined(lines, namespace, "<compiled fields reader>")
    return reader


def fields_writer(
    given: tuple[Any, ...], steps: Mapping[int, EncodeStep], wide: bool
) -> FieldsWriter | None:
    """The loop of `compile_encoder` for one set of field numbers, as a function of its own:
    ``(fields, parts)`` appends each field's length prefix and bytes to ``parts`` and returns
    the bitmap's bytes, or ``None`` where the loop declines (an exception raised declines there
    too). The same checks in the same order, without the loop's per-field unpacking and form
    dispatch; the bitmap is known beforehand. A number that is not a fast field gives a writer
    that declines; keys that are not all ``int`` none (the loop takes them)."""
    if not all(type(number) is int for number in given):
        return None
    numbers = sorted(given)
    if not all(number in steps for number in numbers):
        return _declined
    lines = ["def write(fields, parts):", "    append = parts.append"]
    prefixes: dict[str, Any] = {}
    bitmap = 0
    for number in numbers:
        bit, form, pad, fixed, lengths = steps[number]
        bitmap |= bit
        lines.append(f"    v = fields[{number}]")
        count = "len(d)"
        if form == BINARY:
            lines += ["    if type(v) is not bytes: return None", "    d = v"]
        else:
            lines.append("    if type(v) is not str: return None")
            if form == TEXT:
                lines.append('    d = v.encode("ascii")')
            elif form == TEXT_DIGITS:
                lines += ["    if not v.isdigit(): return None", '    d = v.encode("ascii")']
            else:
                if form == BCD:
                    lines.append("    if not v.isdigit(): return None")
                else:
                    lines.append("    if v and not v.isalnum(): return None")
                if pad is not None:  # counted in nibbles: an odd count takes a pad nibble
                    count = "c"
                    lines.append("    c = len(v)")
                    if not pad:
                        lines.append("    if c & 1: return None")
                    else:
                        padded = '"0" + v' if pad == "L" else 'v + "0"'
                        lines.append(f"    if c & 1: v = {padded}")
                lines.append("    d = fromhex(v)")
        if fixed >= 0:
            lines += [f"    if {count} != {fixed}: return None", "    append(d)"]
        else:
            prefixes[f"p{number}"] = lengths
            lines += [
                f"    length = p{number}[{count}]",
                "    if length is None: return None",
                "    append(length)",
                "    append(d)",
            ]
    if not wide:
        raw = bitmap.to_bytes(BITMAP_BYTES, "big")
    elif bitmap & (1 << 64) - 1:
        raw = (bitmap | 1 << 127).to_bytes(2 * BITMAP_BYTES, "big")
    else:
        raw = (bitmap >> 64).to_bytes(BITMAP_BYTES, "big")
    lines.append(f"    return {raw!r}")
    namespace: dict[str, Any] = {"fromhex": bytes.fromhex, **prefixes}
    writer: FieldsWriter = defined(lines, namespace, "<compiled fields writer>")
    return writer


def defined(lines: list[str], namespace: dict[str, Any], where: str) -> Any:
    """The one function ``lines`` define (named on their first line), compiled with
    ``namespace`` as its globals; ``where`` names it in tracebacks (``<...>``)."""
    exec(compile("\n".join(lines), where, "exec"), namespace)
    return namespace[lines[0].removeprefix("def ").partition("(")[0]]


def _declined(fields: Mapping[int, Any], parts: list[bytes]) -> None:
    return None
