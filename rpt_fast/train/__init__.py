"""The ``rpt-train`` program: prompt-only training of a frozen backbone, with plain PyTorch or
DeepSpeed ZeRO (stage 3 by default, parameter offload optional), checkpoints, resume and export.

Entry points: ``rpt-train`` / ``python -m rpt_fast.train`` (see :mod:`rpt_fast.train.cli`) and
:func:`rpt_fast.train.trainer.train` for a :class:`rpt_fast.train.config.TrainConfig`.
Nothing heavy is imported here: DeepSpeed must not load before the accelerator is chosen.
"""
