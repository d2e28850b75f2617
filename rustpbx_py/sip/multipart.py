# -*- test-case-name: rustpbx_py.test.test_sip_message -*-
"""
Multipart MIME bodies (RFC 2046 section 5.1, RFC 5621 for SIP): split a
C{multipart/*} body into its parts and build one back.

A SIP-I INVITE carries SDP next to ISUP; an RFC 4475 mpart01 MESSAGE
carries text next to a signature.  Parts keep their bytes exactly (binary
content included); part headers are kept in order as (name, value).
"""

from __future__ import annotations

import os
from typing import List, Optional, Sequence, Tuple

from rustpbx_py.sip.headers import HeaderError, parse_content_type

__all__ = ["Part", "parse_multipart", "build_multipart", "find_part", "MultipartError"]

#: Nesting depth and part count we accept: bodies come from the network.
MAX_DEPTH = 4
MAX_PARTS = 32


class MultipartError(HeaderError):
    """A multipart body that does not follow RFC 2046."""


class Part:
    """One body part: its MIME headers and its content."""

    __slots__ = ("headers", "body")

    def __init__(self, headers: Optional[List[Tuple[str, str]]] = None, body: bytes = b"") -> None:
        self.headers: List[Tuple[str, str]] = headers if headers is not None else []
        self.body = body

    def get(self, name: str) -> Optional[str]:
        """The first value of the part header C{name} (case-insensitive)."""
        name = name.lower()
        for n, v in self.headers:
            if n.lower() == name:
                return v
        return None

    @property
    def content_type(self) -> str:
        """The media type, lower-cased, without parameters; RFC 2046's
        default C{text/plain} when the part has no Content-Type."""
        value = self.get("content-type")
        if value is None:
            return "text/plain"
        return value.split(";", 1)[0].strip().lower()

    def __repr__(self) -> str:
        return f"<Part {self.content_type} {len(self.body)} bytes>"


def parse_multipart(body: bytes, content_type: str) -> List[Part]:
    """
    Split C{body} whose Content-Type is C{content_type}.

    @raise MultipartError: when the type is not multipart, has no
        boundary, or the body has no closing delimiter.
    """
    try:
        mime, params = parse_content_type(content_type)
    except HeaderError as e:
        raise MultipartError(str(e))
    if not mime.startswith("multipart/"):
        raise MultipartError(f"not a multipart type: {mime!r}")
    boundary = params.get("boundary")
    if not boundary or len(boundary) > 70:
        raise MultipartError("multipart Content-Type without a valid boundary")
    delimiter = b"--" + boundary.encode("utf-8", "surrogateescape")
    # The first delimiter may start the body; every later one follows CRLF.
    if body.startswith(delimiter):
        pos = 0
    else:
        pos = body.find(b"\r\n" + delimiter)
        if pos < 0:
            raise MultipartError("multipart body without its boundary")
        pos += 2
    parts: List[Part] = []
    sep = b"\r\n" + delimiter
    while True:
        after = pos + len(delimiter)
        if body[after : after + 2] == b"--":
            return parts
        # Skip transport padding to the end of the delimiter line.
        eol = body.find(b"\r\n", after)
        if eol < 0:
            raise MultipartError("multipart body ends inside a delimiter line")
        start = eol + 2
        end = body.find(sep, start - 2)
        if end < 0:
            raise MultipartError("multipart body without a closing delimiter")
        if len(parts) >= MAX_PARTS:
            raise MultipartError(f"more than {MAX_PARTS} body parts")
        parts.append(_parse_part(body[start:end] if end >= start else b""))
        pos = end + 2


def _parse_part(data: bytes) -> Part:
    if data.startswith(b"\r\n"):
        return Part([], data[2:])
    idx = data.find(b"\r\n\r\n")
    if idx < 0:
        head, content = data, b""
    else:
        head, content = data[:idx], data[idx + 4 :]
    headers: List[Tuple[str, str]] = []
    for line in head.decode("utf-8", "surrogateescape").split("\r\n"):
        if not line:
            continue
        if line[0] in " \t" and headers:
            name, value = headers[-1]
            headers[-1] = (name, value + " " + line.strip())
            continue
        name, colon, value = line.partition(":")
        if not colon or not name.strip():
            raise MultipartError(f"malformed body part header {line[:40]!r}")
        headers.append((name.strip(), value.strip()))
    return Part(headers, content)


def build_multipart(
    parts: Sequence[Part], subtype: str = "mixed", boundary: Optional[str] = None
) -> Tuple[str, bytes]:
    """
    Serialise C{parts}; returns (Content-Type value, body).  A boundary is
    chosen when none is given; it must not occur in any part.
    """
    if boundary is None:
        boundary = "rustpbx" + os.urandom(8).hex()
    delimiter = b"--" + boundary.encode("ascii")
    chunks = []
    for part in parts:
        if delimiter in part.body:
            raise MultipartError("the boundary occurs inside a body part")
        chunks.append(delimiter + b"\r\n")
        for name, value in part.headers:
            chunks.append(f"{name}: {value}\r\n".encode("utf-8", "surrogateescape"))
        chunks.append(b"\r\n")
        chunks.append(part.body)
        chunks.append(b"\r\n")
    chunks.append(delimiter + b"--\r\n")
    return f"multipart/{subtype};boundary={boundary}", b"".join(chunks)


def find_part(parts: Sequence[Part], mime: str, depth: int = 0) -> Optional[Part]:
    """The first part of type C{mime}, looking inside nested multiparts."""
    for part in parts:
        ctype = part.content_type
        if ctype == mime:
            return part
        if ctype.startswith("multipart/") and depth < MAX_DEPTH:
            try:
                inner = parse_multipart(part.body, part.get("content-type") or "")
            except MultipartError:
                continue
            found = find_part(inner, mime, depth + 1)
            if found is not None:
                return found
    return None
