"""`python -m modelpress.cli`, like `python -m modelpress`."""

from modelpress.cli import main

main()
