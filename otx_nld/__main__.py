"""``python -m otx_nld`` is the ``otx-nld`` command."""

import sys

from otx_nld.cli import main

sys.exit(main())
