"""`python -m split_models <command> ...` = `splitedge <command> ...` for the model tools
(dataset, train, eval, export): one parser, in split_models/cli.py."""

from __future__ import annotations

import sys

from split_models.cli import main

if __name__ == "__main__":
    sys.exit(main())
