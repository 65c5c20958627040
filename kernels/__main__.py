"""Entry point for ``python -m kernels``."""

import sys

from kernels.cli import main

sys.exit(main())
