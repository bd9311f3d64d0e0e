import sys

from vmdhcp.cli import main

sys.exit(main())
