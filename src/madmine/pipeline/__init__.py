"""Steps strung together: a round of the method (round.py) and the unattended nightly run
(nightly.py). Each is a list of steps with `is_done(ctx)` and `run(ctx)`; the executor, not
the step, owns the completion markers (madmine.completion)."""
