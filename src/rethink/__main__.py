# `python -m rethink ...` (and so `torchrun -m rethink train ...`) runs the same CLI as the console script.
from rethink.cli import main

raise SystemExit(main())
