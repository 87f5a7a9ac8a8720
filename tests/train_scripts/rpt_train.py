"""``rpt-train`` as a script, for ``deepspeed --num_gpus N rpt_train.py ARGS`` in the tests."""

from rpt_fast.train.cli import main

if __name__ == "__main__":
    main()
