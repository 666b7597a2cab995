"""Where the scoring stages run: `local` (this process) or `ray_data` (a Ray Data pipeline)."""
