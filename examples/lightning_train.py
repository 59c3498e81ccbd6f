"""Train train_gpt.py's model with PyTorch Lightning, fed by fastdata, with exact resume.

    pip install lightning
    python examples/lightning_train.py --data /tmp/web --out /tmp/lit --steps 200
    python examples/lightning_train.py --data /tmp/web --out /tmp/lit --steps 400 --resume
    python examples/lightning_train.py --data /tmp/web --out /tmp/lit --devices 2   # DDP

The loader has ``state_dict()``/``load_state_dict()``, so Lightning stores its position
in its own checkpoints and restores it with ``ckpt_path``: a resumed fit
sees exactly the batches an uninterrupted one would have. The loader is built in
``train_dataloader()``, after Lightning has started the DDP processes, so that fastdata sees
each process's rank; it gives every rank its own slice of each global batch, which is why
Lightning must not add a DistributedSampler (it only adds one to torch DataLoaders).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

import fastdata

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # share train_gpt.py's pieces
from train_gpt import BatchLog, Meter, add_model_args, build_model  # noqa: E402


class TokenData(L.LightningDataModule):
    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__()
        self.args = args

    def train_dataloader(self) -> fastdata.DataLoader:
        # Lightning saves the loader's state_dict() in its checkpoints and restores it with
        # ckpt_path: the data order resumes exactly.
        a = self.args
        ds = fastdata.TokenDataset(a.data, seq_len=a.seq_len, seed=a.seed)
        return fastdata.DataLoader(ds, batch_size=a.batch_size, num_workers=a.num_workers,
                                   pin_memory=torch.cuda.is_available())


class LitGPT(L.LightningModule):
    def __init__(self, args: argparse.Namespace, vocab_size: int) -> None:
        super().__init__()
        self.args, self.model = args, build_model(args, vocab_size)
        self.meter = Meter(args.batch_size * args.seq_len * args.devices)
        self.batch_log: BatchLog | None = None

    def on_train_start(self) -> None:
        self.batch_log = BatchLog(self.args.log_batches, self.global_rank, self.trainer.world_size)
        self.batch_done = time.perf_counter()

    # Lightning fetches the batches itself: the data wait is the gap between one step's end
    # and the next one's start (the loader's next(), plus Lightning's bookkeeping).
    def on_train_batch_start(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self.meter.wait += time.perf_counter() - self.batch_done

    def on_train_batch_end(self, outputs: object, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self.batch_done = time.perf_counter()

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self.model(batch["input_ids"], batch["labels"])
        self.log("loss", loss, prog_bar=True)
        self.batch_log.write(self.global_step, batch, loss)
        self.meter.steps += 1
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.parameters(), lr=self.args.lr)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True, help="packed dataset: a directory or a URL")
    p.add_argument("--out", required=True, help="directory for Lightning's checkpoints")
    p.add_argument("--resume", action="store_true", help="continue from --out/last.ckpt if it exists")
    p.add_argument("--devices", type=int, default=1, help="processes (DDP when more than one)")
    p.add_argument("--ckpt-every", type=int, default=100)
    add_model_args(p, steps=10)
    args = p.parse_args(argv)

    with fastdata.open_dataset(args.data) as data:
        vocab_size = data.manifest.tokenizer.vocab_size
    model = LitGPT(args, vocab_size)
    checkpoint = ModelCheckpoint(dirpath=args.out, save_last=True, every_n_train_steps=args.ckpt_every)
    trainer = L.Trainer(max_steps=args.steps, accelerator="auto", devices=args.devices,
                        strategy="ddp" if args.devices > 1 else "auto", callbacks=[checkpoint],
                        logger=False, enable_progress_bar=False, enable_model_summary=False)
    last = os.path.join(args.out, "last.ckpt")
    trainer.fit(model, datamodule=TokenData(args),
                ckpt_path=last if args.resume and os.path.exists(last) else None)
    if trainer.is_global_zero:
        print(f"loss {trainer.callback_metrics['loss'].item():.4f}")
        print(model.meter.report())


if __name__ == "__main__":
    main()
