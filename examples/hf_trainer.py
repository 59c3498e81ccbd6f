"""The Hugging Face ``Trainer`` fed by fastdata, with the loader's state in every checkpoint.

    fastdata pack examples/corpus/stdlib_docs.jsonl -o /tmp/web
    python examples/hf_trainer.py --data /tmp/web --out /tmp/hf --steps 40 --save-steps 20
    python examples/hf_trainer.py --data /tmp/web --out /tmp/hf --steps 80 --save-steps 20 --resume

A tiny GPT-2 (``GPT2Config`` built here, nothing downloaded) trains on a ``TokenDataset``.
``FastdataTrainer.get_train_dataloader`` hands the Trainer a ``fastdata.DataLoader``; the
``FastdataState`` callback writes ``loader.state_dict()`` (a few hundred bytes of JSON) into
each ``checkpoint-N/`` the Trainer saves and, on ``--resume``, loads it from the checkpoint
the Trainer resumes from. The Trainer's own resume would fast-forward the loader by
re-reading every batch already trained on; ``ignore_data_skip=True`` turns that off, and
fastdata continues at the next batch at once, whatever the step.

fastdata's labels are already shifted (``labels[t]`` is token ``t + 1``, -100 where no loss
is taken), so ``compute_loss`` takes the cross-entropy against them directly instead of
letting the model shift them a second time. Under ``torchrun`` each rank gets its own slice
of every global batch (fastdata reads the rank from the environment).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

import torch
import torch.nn.functional as F
from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainerCallback, TrainingArguments
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, get_last_checkpoint

import fastdata
from fastdata import metrics

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # share train_gpt.py's pieces
from train_gpt import BatchLog, add_model_args, storage_options_from_env  # noqa: E402

STATE_NAME = "fastdata_loader.json"  #: the loader's state, inside each checkpoint-N/ directory


class FastdataState(TrainerCallback):
    """Save ``loader.state_dict()`` with every checkpoint; load it when training resumes."""

    def __init__(self, loader: fastdata.DataLoader, resume_from: str | None) -> None:
        self.loader, self.resume_from = loader, resume_from

    def on_train_begin(self, args: TrainingArguments, state: Any, control: Any, **kwargs: Any) -> None:
        if self.resume_from is None:
            return
        path = os.path.join(self.resume_from, STATE_NAME)
        if not os.path.exists(path):
            raise SystemExit(f"{self.resume_from} has no {STATE_NAME}: it was not saved with the "
                             "FastdataState callback, and the data would restart from its first batch")
        with open(path) as f:
            data = json.load(f)
        self.loader.load_state_dict(data)  # the next iter() continues after the checkpoint's last batch
        print(f"resumed at step {state.global_step} from {self.resume_from}, data at "
              f"{data['epoch']}:{data['step']}", flush=True)

    def on_save(self, args: TrainingArguments, state: Any, control: Any, **kwargs: Any) -> None:
        if not state.is_world_process_zero:  # the state is the same on every rank
            return
        ckpt = os.path.join(args.output_dir, f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}")
        tmp = os.path.join(ckpt, f".{STATE_NAME}.tmp")
        with open(tmp, "w") as f:
            json.dump(self.loader.state_dict(), f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, os.path.join(ckpt, STATE_NAME))


class FastdataTrainer(Trainer):
    """A Trainer whose training batches come from a ``fastdata.DataLoader``."""

    def __init__(self, *args: Any, loader: fastdata.DataLoader, batch_log: BatchLog, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.loader, self.batch_log = loader, batch_log

    def get_train_dataloader(self) -> Any:
        return self.loader

    def compute_loss(self, model: Any, inputs: dict[str, torch.Tensor], return_outputs: bool = False,
                     num_items_in_batch: Any = None) -> Any:
        outputs = model(input_ids=inputs["input_ids"])
        logits, labels = outputs.logits.float(), inputs["labels"]
        loss = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100)
        if model.training:
            self.batch_log.write(self.state.global_step, inputs, loss)
        return (loss, outputs) if return_outputs else loss


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True, help="packed dataset: a directory or a URL")
    p.add_argument("--out", required=True, help="the Trainer's output_dir (checkpoint-N/ directories)")
    p.add_argument("--save-steps", type=int, default=20, help="steps between checkpoints")
    p.add_argument("--resume", action="store_true", help="continue from --out's newest checkpoint, if any")
    p.add_argument("--cache-dir", help="node-local cache for remote or compressed shards")
    p.add_argument("--cache-limit", help="bytes the node cache may hold, e.g. 400GB")
    add_model_args(p, steps=40)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    ds = fastdata.TokenDataset(args.data, seq_len=args.seq_len, seed=args.seed,
                               storage_options=storage_options_from_env(args.data),
                               cache_dir=args.cache_dir, cache_limit=args.cache_limit)
    loader = fastdata.DataLoader(ds, batch_size=args.batch_size, num_workers=args.num_workers)
    tok = ds.data.manifest.tokenizer
    torch.manual_seed(args.seed)  # the same initial weights every run
    model = GPT2LMHeadModel(GPT2Config(
        vocab_size=tok.vocab_size, n_positions=args.seq_len, n_embd=args.d_model, n_layer=args.n_layers,
        n_head=args.n_heads, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        bos_token_id=tok.bos_id, eos_token_id=tok.eos_id))
    training = TrainingArguments(
        output_dir=args.out, max_steps=args.steps, per_device_train_batch_size=args.batch_size,
        learning_rate=args.lr, save_strategy="steps", save_steps=args.save_steps,
        logging_steps=args.save_steps,
        ignore_data_skip=True,  # fastdata's state resumes the data; the Trainer must not replay batches
        report_to="none", use_cpu=True, seed=args.seed, disable_tqdm=True)
    resume_from = get_last_checkpoint(args.out) if args.resume and os.path.isdir(args.out) else None
    trainer = FastdataTrainer(model=model, args=training, loader=loader,
                              batch_log=BatchLog(args.log_batches, rank=training.process_index,
                                                 world_size=training.world_size),
                              callbacks=[FastdataState(loader, resume_from)])
    result = trainer.train(resume_from_checkpoint=resume_from)
    m = loader.metrics()
    print(f"{trainer.state.global_step} steps, train loss {result.training_loss:.4f}; "
          f"{metrics.summary_line(m)}")


if __name__ == "__main__":
    main()
