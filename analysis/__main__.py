"""``python -m analysis NAME [--tracking-uri URI] [--out DIR]``: see ``analysis.report``."""

import sys

from .report import main

sys.exit(main())
