"""Moved to xlagen.engine.jobs.cli; `python -m xlagen.engine.cli` keeps working."""
from .jobs.cli import main

if __name__ == "__main__":
    main()
