import sys

from fairl.cli import main

sys.exit(main())
