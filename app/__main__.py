"""``python -m app`` is the ``musicrec`` command."""

import sys

from app.main import main

sys.exit(main())
