"""The command line: one thin module per command group, each with `register(app)`.

Command functions import their step when they run, not at start-up: importing torch takes
about 6.5 s and Ray Data another 6.5 s on a 2-core machine (measured with
`python -c "import torch"`), which `madmine --help`, `madmine sql` or `madmine rate serve`
should never pay.
"""

from madmine.cli.main import app, main

__all__ = ["app", "main"]
