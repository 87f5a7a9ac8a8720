"""Trains a ResidualPromptModel with ``transformers.Trainer`` (rpt_fast.train.hf.PromptTrainer)
for 4 steps saving at step 2, then again resuming from that checkpoint in a fresh model and
Trainer; writes both runs' final trainable tensors (gathered whole under ZeRO-3) to
``OUT/whole.safetensors`` and ``OUT/resumed.safetensors``.

    python hf_trainer_run.py OUT [--zero-stage N] [--model PRESET]
    (with N: TrainingArguments(deepspeed=...); PRESET: t5-tiny, or a decoder-only one)
"""

import argparse
import json
import os

import torch
from safetensors.torch import save_file
from transformers import ByT5Tokenizer, DataCollatorForSeq2Seq, TrainingArguments

from rpt_fast.presets import build_backbone
from rpt_fast.prompt import ResidualPromptModel
from rpt_fast.train.export import gathered, trainable_tensors
from rpt_fast.train.hf import PromptTrainer, prompt_dataset
from rpt_fast.train.tasks import get_task

parser = argparse.ArgumentParser()
parser.add_argument("out")
parser.add_argument("--zero-stage", type=int, default=None)
parser.add_argument("--model", default="t5-tiny")
args = parser.parse_args()

ds_config = None
if args.zero_stage is not None:
    from rpt_fast.train.distributed import init_distributed

    init_distributed(True)  # one CPU rank (gloo), without DeepSpeed's slow CPU-op build
    ds_config = {"train_micro_batch_size_per_gpu": "auto", "train_batch_size": "auto",
                 "gradient_accumulation_steps": "auto", "gradient_clipping": "auto",
                 "zero_optimization": {"stage": args.zero_stage},
                 "zero_allow_untested_optimizer": True, "zero_force_ds_cpu_optimizer": False}

tokenizer = ByT5Tokenizer()
task = get_task("synthetic", seed=42, max_train=32)


def train(out, resume_from=None):
    torch.manual_seed(0)  # the MLP's init
    model = ResidualPromptModel(build_backbone(args.model, seed=42), num_tokens=4, bottleneck=8, backend="eager",
                                seed=0)
    data = prompt_dataset(task.train, tokenizer, model)
    training = TrainingArguments(output_dir=out, max_steps=4, per_device_train_batch_size=4, learning_rate=0.3,
                                 save_steps=2, logging_steps=1, report_to=[], use_cpu=True, seed=0,
                                 deepspeed=ds_config, disable_tqdm=True)
    trainer = PromptTrainer(model=model, args=training, train_dataset=data,
                            data_collator=DataCollatorForSeq2Seq(tokenizer))
    trainer.train(resume_from_checkpoint=resume_from)
    losses[out] = [r["loss"] for r in trainer.state.log_history if "loss" in r]
    with gathered(model):
        return trainable_tensors(model)


losses = {}


whole = train(os.path.join(args.out, "whole"))
resumed = train(os.path.join(args.out, "resumed"), resume_from=os.path.join(args.out, "whole", "checkpoint-2"))
save_file(whole, os.path.join(args.out, "whole.safetensors"))
save_file(resumed, os.path.join(args.out, "resumed.safetensors"))
assert all(t.numel() > 0 for t in whole.values())
with open(os.path.join(args.out, "losses.json"), "w") as handle:
    json.dump(losses, handle)
