"""``python -m sematlas.widgets serve <demo> --profile <profile>``: see :mod:`sematlas.widgets.serve`."""

from sematlas.widgets.serve import main

raise SystemExit(main())
