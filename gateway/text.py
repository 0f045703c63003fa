"""Making untrusted text (file names, core messages) safe to print in logs, history and terminals.

The one implementation lives in ``validators.display`` (validators may not import the gateway); this
module keeps the gateway's own import path.
"""

from __future__ import annotations

from validators.display import visible

__all__ = ["visible"]
