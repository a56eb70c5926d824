"""``python -m statcell`` is the ``statcell`` command (the rules use this form, see rules/common.smk)."""

import sys

from statcell.cli import main

sys.exit(main())
