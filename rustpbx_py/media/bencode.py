# -*- test-case-name: rustpbx_py.test.test_rtpengine -*-
"""
Bencode (BitTorrent's encoding, BEP 3), the body format of rtpengine's ng
control protocol: integers C{i42e}, byte strings C{4:spam}, lists
C{l...e} and dictionaries C{d...e} with keys sorted as raw bytes.

Decoding is strict and bounded because replies come from the network: a
truncated, oversized or otherwise malformed body raises L{BencodeError}
(a C{ValueError}), never anything else.
"""

from typing import Any, Union

Value = Union[int, bytes, list, dict]

#: Deepest nesting accepted when decoding (rtpengine's replies nest about
#: eight levels: call > tags > tag > medias > media > streams > stream > stats).
MAX_DEPTH = 32


class BencodeError(ValueError):
    """A body that is not valid bencode."""


def encode(value: Any) -> bytes:
    """
    Encode C{value}: C{int}, C{bytes}, C{str} (UTF-8), C{list}/C{tuple},
    C{dict} (keys C{str} or C{bytes}, written sorted).  C{bool} and other
    types raise C{TypeError}: ng has no booleans, flags are lists of
    strings.
    """
    out: list[bytes] = []
    _encode(value, out)
    return b"".join(out)


def _encode(value: Any, out: list) -> None:
    if isinstance(value, bool):
        raise TypeError("bencode has no booleans")
    if isinstance(value, int):
        out.append(b"i%de" % value)
    elif isinstance(value, str):
        # surrogateescape: a Call-ID read from the wire with undecodable
        # bytes goes back as those same bytes
        data = value.encode("utf-8", "surrogateescape")
        out.append(b"%d:" % len(data))
        out.append(data)
    elif isinstance(value, (bytes, bytearray)):
        out.append(b"%d:" % len(value))
        out.append(bytes(value))
    elif isinstance(value, (list, tuple)):
        out.append(b"l")
        for item in value:
            _encode(item, out)
        out.append(b"e")
    elif isinstance(value, dict):
        items = []
        for key, item in value.items():
            if isinstance(key, str):
                key = key.encode("utf-8")
            elif not isinstance(key, bytes):
                raise TypeError(f"bencode dictionary keys are strings, not {type(key).__name__}")
            items.append((key, item))
        items.sort(key=lambda kv: kv[0])
        out.append(b"d")
        for key, item in items:
            out.append(b"%d:" % len(key))
            out.append(key)
            _encode(item, out)
        out.append(b"e")
    else:
        raise TypeError(f"cannot bencode {type(value).__name__}")


def decode(data: bytes) -> Value:
    """
    Decode one complete value.  Strings come back as C{bytes}, dictionary
    keys as C{str} (UTF-8, undecodable bytes escaped so a key never
    raises).  Trailing bytes after the value are an error.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise BencodeError("bencode input must be bytes")
    data = bytes(data)
    value, end = _decode(data, 0, 0)
    if end != len(data):
        raise BencodeError(f"{len(data) - end} bytes after the value")
    return value


def _decode(data: bytes, pos: int, depth: int) -> tuple:
    if depth > MAX_DEPTH:
        raise BencodeError("nested too deeply")
    if pos >= len(data):
        raise BencodeError("truncated")
    c = data[pos]
    if c == 0x69:  # i
        end = data.find(b"e", pos + 1)
        if end < 0:
            raise BencodeError("unterminated integer")
        return _integer(data[pos + 1:end]), end + 1
    if 0x30 <= c <= 0x39:
        colon = data.find(b":", pos)
        if colon < 0 or colon - pos > 10:
            raise BencodeError("bad string length")
        size = _integer(data[pos:colon])
        if size < 0:
            raise BencodeError("negative string length")
        start = colon + 1
        if start + size > len(data):
            raise BencodeError("truncated string")
        return data[start:start + size], start + size
    if c == 0x6C:  # l
        items = []
        pos += 1
        while True:
            if pos >= len(data):
                raise BencodeError("unterminated list")
            if data[pos] == 0x65:
                return items, pos + 1
            item, pos = _decode(data, pos, depth + 1)
            items.append(item)
    if c == 0x64:  # d
        result: dict = {}
        pos += 1
        while True:
            if pos >= len(data):
                raise BencodeError("unterminated dictionary")
            if data[pos] == 0x65:
                return result, pos + 1
            if not 0x30 <= data[pos] <= 0x39:
                raise BencodeError("dictionary key is not a string")
            key, pos = _decode(data, pos, depth + 1)
            item, pos = _decode(data, pos, depth + 1)
            result[key.decode("utf-8", "surrogateescape")] = item
    raise BencodeError(f"unexpected byte {bytes([c])!r} at {pos}")


def _integer(text: bytes) -> int:
    """Digits with an optional minus; no leading zeros, no "-0" (BEP 3)."""
    body = text[1:] if text[:1] == b"-" else text
    if not body or not body.isdigit() or len(body) > 20:
        raise BencodeError(f"bad integer {text[:24]!r}")
    if (body[:1] == b"0" and len(body) > 1) or text == b"-0":
        raise BencodeError(f"bad integer {text[:24]!r}")
    return int(text)
