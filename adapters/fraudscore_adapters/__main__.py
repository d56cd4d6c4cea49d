"""``python -m fraudscore_adapters COMMAND``: see :mod:`fraudscore_adapters.cli`."""

import sys

from fraudscore_adapters.cli import main

sys.exit(main())
