"""`python -m trainkit ...` is `trainkit ...` (torchrun needs a module to start)."""

from trainkit.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
