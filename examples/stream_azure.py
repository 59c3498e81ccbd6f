"""Train while streaming shards from Azure Blob Storage through the node-local cache.

    export AZURE_STORAGE_CONNECTION_STRING=...       # or see storage_options_from_env
    fastdata pack examples/corpus/stdlib_docs.jsonl -o az://corpus/web --compression zstd
    python examples/stream_azure.py --url abfs://corpus@ACCOUNT.dfs.core.windows.net/web \\
        --cache-dir /mnt/nvme/fastdata --cache-limit 400GB

Credentials come from the environment, never from the command line or the code (see
``storage_options_from_env`` in train_gpt.py: a connection string, an account key or SAS
token, or DefaultAzureCredential such as a managed identity). The manifest is read once;
a background thread fetches the shards the coming steps need into ``--cache-dir``, which
every process on the node shares and which never holds more than ``--cache-limit``.
The first batch waits for its shards (cold cache); later ones should not wait at all.
Under torchrun, train_gpt.py takes the same URL and cache flags for a multi-GPU run.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch

import fastdata

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # share train_gpt.py's pieces
from train_gpt import BatchLog, Meter, add_model_args, build_model, storage_options_from_env  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--url", required=True, help="abfs://container@account.dfs.core.windows.net/path or az://...")
    p.add_argument("--cache-dir", help="node-local directory for the shards (default: a temp directory)")
    p.add_argument("--cache-limit", help="bytes the cache may hold, e.g. 400GB (default: no limit)")
    p.add_argument("--prefetch-bytes", type=int, default=256 << 20, help="how far ahead shards are fetched")
    add_model_args(p)
    args = p.parse_args(argv)

    t0 = time.perf_counter()
    ds = fastdata.TokenDataset(args.url, seq_len=args.seq_len, seed=args.seed,
                               storage_options=storage_options_from_env(args.url),
                               cache_dir=args.cache_dir, cache_limit=args.cache_limit)
    print(f"{ds}: manifest read in {time.perf_counter() - t0:.2f} s")
    loader = fastdata.DataLoader(ds, batch_size=args.batch_size, num_workers=args.num_workers,
                                 prefetch_bytes=args.prefetch_bytes)
    model = build_model(args, ds.data.manifest.tokenizer.vocab_size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr)

    log = BatchLog(args.log_batches, rank=0, world_size=1)
    meter = Meter(args.batch_size * args.seq_len)
    batches = iter(loader)
    while meter.steps < args.steps:
        batch = meter.next_batch(batches)
        if batch is None:  # next epoch
            batches = iter(loader)
            continue
        if meter.steps == 0:
            print(f"first batch after {meter.wait:.2f} s (its shards fetched into a cold cache)")
        loss = model(batch["input_ids"], batch["labels"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        log.write(meter.steps, batch, loss)
        meter.steps += 1
    print(f"last loss {loss.item():.4f}")
    print(meter.report())


if __name__ == "__main__":
    main()
