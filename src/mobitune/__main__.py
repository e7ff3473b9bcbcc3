"""`python -m mobitune` is the `mobitune` command."""

import sys

from mobitune.cli import main

sys.exit(main())
