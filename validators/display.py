"""Making untrusted text (file names, member names, core messages) safe to print on one line.

Shared by the validators and the gateway (``gateway.text`` re-exports it); it imports nothing of either.
"""

from __future__ import annotations

import unicodedata

__all__ = ["visible"]

# control, format, surrogate (from surrogateescape), private use, unassigned, line and paragraph separators
_ESCAPED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})


def _escape(code: int) -> str:
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def visible(text: str, limit: int = 300) -> str:
    """One printable, encodable line: invisible and odd characters escaped, at most ``limit`` of them shown.

    Control, format, surrogate, private-use and unassigned characters, line and paragraph separators
    and every whitespace character but the plain space become ``\\xNN``, ``\\uNNNN`` or ``\\UNNNNNNNN``;
    a backslash is doubled so an escape can never be forged. Longer text is cut at ``limit``
    characters and ends with ``…(+N chars)``.
    """
    if len(text) <= limit and text.isprintable() and "\\" not in text:
        return text  # the common case, at C speed: printable means none of the categories above
    out: list[str] = []
    for char in text[:limit]:
        if char == "\\":
            out.append("\\\\")
        elif unicodedata.category(char) in _ESCAPED_CATEGORIES or (char.isspace() and char != " "):
            out.append(_escape(ord(char)))
        else:
            out.append(char)
    if len(text) > limit:
        out.append(f"…(+{len(text) - limit} chars)")
    return "".join(out)
