"""Train train_gpt.py's model with DeepSpeed, fed by fastdata, with exact resume.

    DS_BUILD_OPS=0 pip install deepspeed
    deepspeed --num_gpus 8 examples/deepspeed_train.py --data /tmp/web --out /tmp/ds --zero 2
    python examples/deepspeed_train.py --data /tmp/web --out /tmp/ds --steps 400 --resume   # one process

DeepSpeed's ``training_data=`` argument wraps a map-style dataset in a DistributedSampler;
fastdata already gives every rank its own slice of each global batch, so this uses the
other documented path: ``deepspeed.initialize`` without ``training_data`` and our own
loader, one micro-batch per ``engine.step()``. The loader's position travels in
``save_checkpoint``'s ``client_state`` and comes back from ``load_checkpoint``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

import deepspeed
import torch

import fastdata

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # share train_gpt.py's pieces
from train_gpt import BatchLog, Meter, add_model_args, build_model  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True, help="packed dataset: a directory or a URL")
    p.add_argument("--out", required=True, help="directory for DeepSpeed's checkpoints")
    p.add_argument("--resume", action="store_true", help="continue from --out's latest checkpoint, if any")
    p.add_argument("--ckpt-every", type=int, default=100)
    p.add_argument("--zero", type=int, default=0, choices=(0, 1, 2, 3), help="ZeRO stage")
    p.add_argument("--local_rank", type=int, help=argparse.SUPPRESS)  # passed by the deepspeed launcher
    add_model_args(p, steps=10)
    args = p.parse_args(argv)

    # A plain `python` run is a job of one: give it the rendezvous a launcher would.
    for key, value in (("RANK", "0"), ("LOCAL_RANK", "0"), ("WORLD_SIZE", "1"),
                       ("MASTER_ADDR", "127.0.0.1"), ("MASTER_PORT", "29511")):
        os.environ.setdefault(key, value)
    cuda = torch.cuda.is_available()
    if not cuda:
        # On CPUs DeepSpeed's communication backend compiles a shared-memory all-reduce
        # kernel at start-up (minutes, with a compiler); gloo alone serves a CPU run. None is
        # what DeepSpeed itself uses where the kernel is unavailable.
        # (deepspeed.comm.torch is the torch package there: go through importlib.)
        importlib.import_module("deepspeed.comm.torch").build_shm_op = lambda: None
    deepspeed.init_distributed(dist_backend="nccl" if cuda else "gloo")

    ds = fastdata.TokenDataset(args.data, seq_len=args.seq_len, seed=args.seed)
    loader = fastdata.DataLoader(ds, batch_size=args.batch_size, num_workers=args.num_workers,
                                 pin_memory=cuda)
    model = build_model(args, ds.data.manifest.tokenizer.vocab_size)
    config = {"train_micro_batch_size_per_gpu": args.batch_size, "gradient_accumulation_steps": 1,
              "zero_optimization": {"stage": args.zero}, "bf16": {"enabled": cuda}}
    # A torch optimizer: DeepSpeed's own (FusedAdam, CPUAdam) would compile kernels at run time.
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr)
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, config=config)

    step = 0
    if args.resume and os.path.exists(os.path.join(args.out, "latest")):
        _, client = engine.load_checkpoint(args.out)
        loader.load_state_dict(client["data"])  # the next iter(loader) starts at the saved batch
        step = client["step"]
        if engine.global_rank == 0:
            print(f"resumed at step {step}")

    log = BatchLog(args.log_batches, engine.global_rank, engine.world_size)
    meter = Meter(args.batch_size * args.seq_len * engine.world_size)
    batches = iter(loader)
    while step < args.steps:
        batch = meter.next_batch(batches)
        if batch is None:  # next epoch
            batches = iter(loader)
            continue
        loss = engine(batch["input_ids"].to(engine.device, non_blocking=True),
                      batch["labels"].to(engine.device, non_blocking=True))
        engine.backward(loss)
        engine.step()
        log.write(step, batch, loss)
        step += 1
        meter.steps += 1
        if step % args.ckpt_every == 0 or step == args.steps:
            # Every rank calls save_checkpoint (it is collective); the loader state is the same on all.
            engine.save_checkpoint(args.out, tag=f"step-{step}",
                                   client_state={"data": loader.state_dict(), "step": step})
    if engine.global_rank == 0:
        print(f"loss {loss.item():.4f}")
        print(meter.report())


if __name__ == "__main__":
    main()
