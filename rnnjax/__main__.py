"""`python -m rnnjax`: the `rnnjax` command."""

import sys

from rnnjax.cli import main

sys.exit(main())
