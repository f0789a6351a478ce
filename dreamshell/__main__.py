"""`python -m dreamshell` works like the `dreamshell` command."""

import sys

from .cli import main

sys.exit(main())
