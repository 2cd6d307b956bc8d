"""``python -m sematlas.cli``: the ``sematlas`` command line."""

from __future__ import annotations

import sys

from sematlas.cli import main

sys.exit(main())
