"""``python -m rpt_fast.train`` and ``deepspeed --module rpt_fast.train``."""

from .cli import main

if __name__ == "__main__":
    main()
