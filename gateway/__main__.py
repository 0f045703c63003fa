"""``python -m gateway``: the same as the ``fdep-gateway`` console script."""

import sys

from gateway.ops.cli import main

sys.exit(main())
