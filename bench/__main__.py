"""``python -m bench``: the side-by-side benchmark suite (see bench/suite.py, ``python -m bench --help``)."""

from bench.suite import main

main()
