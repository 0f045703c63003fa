"""Making untrusted text (file names, core messages) safe to print in logs, history and terminals."""

from __future__ import annotations

import unicodedata

_MAX_SHOWN = 300


def visible(text: str, limit: int = _MAX_SHOWN) -> str:
    """Escape control, format, separator and surrogate-escaped characters: one printable, encodable line."""
    out = []
    for char in text[:limit]:
        category = unicodedata.category(char)
        if category in ("Cc", "Cf", "Cs", "Zl", "Zp") or char == "\\":
            code = ord(char)
            out.append("\\\\" if char == "\\" else (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"))
        elif char.isspace() and char != " ":
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    if len(text) > limit:
        out.append(f"…(+{len(text) - limit} chars)")
    return "".join(out)

