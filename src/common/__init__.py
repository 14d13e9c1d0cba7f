"""What every entry script and package shares: the project's paths, one-line errors, atomic files
and the process bootstrap."""
