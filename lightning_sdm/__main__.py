import sys

from lightning_sdm.cli import main

sys.exit(main())
