"""A minimal GPT pre-training loop fed by fastdata, under torchrun, with exact resume.

    fastdata pack examples/corpus/stdlib_docs.jsonl -o /tmp/web
    torchrun --nproc_per_node 2 examples/train_gpt.py --data /tmp/web --out /tmp/run --steps 400 --resume

Stopped or preempted, the same command continues from the newest checkpoint in ``--out``.

One process per device: DDP over NCCL on GPUs (batches in pinned memory, copied with
``non_blocking=True``), over gloo on CPUs. fastdata gives every rank its own slice of each
global batch, so there is no DistributedSampler. The checkpoint holds the model, the
optimizer, the step and ``loader.state_dict()`` (a few hundred bytes, the same on every
rank); rank 0 writes it atomically, and ``--resume`` continues with exactly the batches an
uninterrupted run would have seen. With ``--dcp`` the checkpoint is a
``torch.distributed.checkpoint`` directory instead, written by every rank (the loader is a
DCP ``Stateful``: ``dcp.save({"train": ..., "loader": loader})``); it loads on any number of
ranks with the same global batch. ``--data`` may be a URL (``abfs://``, ``az://``, ``s3://``):
Azure credentials then come from the environment (see ``storage_options_from_env``).

The model, the batch digest and the throughput meter are shared by the other examples.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import time

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

import fastdata

# --------------------------------------------------------------------------- the model


class Block(nn.Module):
    """Pre-norm transformer block: causal self-attention, then an MLP."""

    def __init__(self, d_model: int, n_heads: int) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.ln1, self.ln2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.qkv, self.proj = nn.Linear(d_model, 3 * d_model), nn.Linear(d_model, d_model)
        self.mlp = nn.Sequential(nn.Linear(d_model, 4 * d_model), nn.GELU(), nn.Linear(4 * d_model, d_model))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(b, t, 3, self.n_heads, d // self.n_heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(y.transpose(1, 2).reshape(b, t, d))
        return x + self.mlp(self.ln2(x))


class GPT(nn.Module):
    """A small decoder-only transformer (learned positions, tied embeddings)."""

    def __init__(self, vocab_size: int, seq_len: int, d_model: int, n_layers: int, n_heads: int) -> None:
        super().__init__()
        self.tok, self.pos = nn.Embedding(vocab_size, d_model), nn.Embedding(seq_len, d_model)
        self.blocks = nn.ModuleList(Block(d_model, n_heads) for _ in range(n_layers))
        self.ln = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab_size, bias=False)
        self.head.weight = self.tok.weight
        # Small embeddings (as GPT-2): with torch's N(0, 1) default the tied head starts with
        # huge logits and a loss far above log(vocab_size).
        nn.init.normal_(self.tok.weight, std=0.02)
        nn.init.normal_(self.pos.weight, std=0.02)

    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Mean next-token loss over the labelled positions (fastdata marks the rest -100)."""
        pos = torch.arange(input_ids.shape[1], device=input_ids.device)
        x = self.tok(input_ids) + self.pos(pos)
        for block in self.blocks:
            x = block(x)
        logits = self.head(self.ln(x)).float()
        loss = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100, reduction="sum")
        # A batch can hold no label at all (a chat sample cut before the assistant's turn):
        # divide by at least 1 so it contributes a zero loss, not NaN.
        return loss / (labels != -100).sum().clamp(min=1)


def build_model(args: argparse.Namespace, vocab_size: int) -> GPT:
    torch.manual_seed(args.seed)  # the same initial weights on every rank and every run
    return GPT(vocab_size, args.seq_len, args.d_model, args.n_layers, args.n_heads)


# --------------------------------------------------------------------------- helpers shared by the examples


def add_model_args(p: argparse.ArgumentParser, steps: int = 20) -> None:
    """Tiny defaults, so every example runs in seconds on a CPU."""
    p.add_argument("--steps", type=int, default=steps, help="optimizer steps in all")
    p.add_argument("--batch-size", type=int, default=4, help="samples per rank per step")
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--d-model", type=int, default=64)
    p.add_argument("--n-layers", type=int, default=2)
    p.add_argument("--n-heads", type=int, default=4)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0, help="seeds the data order and the initial weights")
    p.add_argument("--num-workers", type=int, default=2, help="fastdata loader threads")
    p.add_argument("--log-batches", metavar="FILE",
                   help="append one JSON line per step: step, each rank's batch digest, loss")


def storage_options_from_env(url: str) -> dict:
    """fsspec options for ``url`` from the environment (never hard-code a credential).

    Azure (``az://``, ``abfs://``): ``AZURE_STORAGE_CONNECTION_STRING``, or
    ``AZURE_STORAGE_ACCOUNT_NAME`` with ``AZURE_STORAGE_ACCOUNT_KEY`` or ``AZURE_STORAGE_SAS_TOKEN``,
    or with neither: adlfs's DefaultAzureCredential (managed identity on Azure ML, ``az login``
    on a workstation). ``FASTDATA_ALLOW_INSECURE=1`` allows a plain-http endpoint (Azurite).
    Other schemes: their own libraries read the environment.
    """
    env, opts = os.environ, {}
    if url.startswith(("az://", "abfs://", "abfss://")):
        if env.get("AZURE_STORAGE_CONNECTION_STRING"):
            opts["connection_string"] = env["AZURE_STORAGE_CONNECTION_STRING"]
        elif env.get("AZURE_STORAGE_ACCOUNT_NAME"):
            opts["account_name"] = env["AZURE_STORAGE_ACCOUNT_NAME"]
            if env.get("AZURE_STORAGE_ACCOUNT_KEY"):
                opts["account_key"] = env["AZURE_STORAGE_ACCOUNT_KEY"]
            elif env.get("AZURE_STORAGE_SAS_TOKEN"):
                opts["sas_token"] = env["AZURE_STORAGE_SAS_TOKEN"]
            else:
                opts["anon"] = False  # adlfs then asks DefaultAzureCredential
    if env.get("FASTDATA_ALLOW_INSECURE") == "1":
        opts["allow_insecure"] = True
    return opts


def batch_digest(batch: dict[str, torch.Tensor]) -> int:
    """64-bit fingerprint of a batch's inputs and labels (compared across runs by the tests)."""
    h = hashlib.blake2b(digest_size=8)
    for key in ("input_ids", "labels"):
        h.update(batch[key].cpu().numpy().tobytes())
    return int.from_bytes(h.digest(), "little", signed=True)


class BatchLog:
    """``--log-batches``: rank 0 appends ``{"step", "digests" (one per rank), "loss"}`` lines."""

    def __init__(self, path: str | None, rank: int, world_size: int) -> None:
        self.path, self.rank, self.world_size = path, rank, world_size

    def write(self, step: int, batch: dict[str, torch.Tensor], loss: torch.Tensor) -> None:
        if self.path is None:
            return
        digest = torch.tensor([batch_digest(batch)], device=loss.device)
        loss = loss.detach().clone()
        if self.world_size > 1:
            digests = [torch.zeros_like(digest) for _ in range(self.world_size)]
            dist.all_gather(digests, digest)
            dist.all_reduce(loss)
            loss /= self.world_size
            digest = torch.cat(digests)
        if self.rank == 0:
            line = {"step": step, "digests": [f"{d & (2**64 - 1):016x}" for d in digest.tolist()],
                    "loss": loss.item()}
            with open(self.path, "a") as f:
                f.write(json.dumps(line) + "\n")


class Meter:
    """Tokens per second and the time the loop spent waiting for its next batch."""

    def __init__(self, tokens_per_step: int) -> None:
        self.tokens_per_step, self.steps, self.wait = tokens_per_step, 0, 0.0
        self.start = time.perf_counter()

    def next_batch(self, batches):
        t = time.perf_counter()
        batch = next(batches, None)
        self.wait += time.perf_counter() - t
        return batch

    def report(self) -> str:
        elapsed = time.perf_counter() - self.start
        steps = max(self.steps, 1)
        tokens_per_s = self.tokens_per_step * self.steps / elapsed
        return (f"{self.steps} steps in {elapsed:.1f} s: {tokens_per_s:,.0f} tokens/s, data wait "
                f"{self.wait / steps * 1e3:.2f} ms/step ({100 * self.wait / elapsed:.1f} % of the time)")


def lr_at(step: int, args: argparse.Namespace) -> float:
    """Linear warm-up, then cosine decay to 10 % at ``--steps`` (a pure function of the step)."""
    warmup = max(1, min(100, args.steps // 10))
    if step < warmup:
        return args.lr * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, args.steps - warmup))
    return args.lr * (0.1 + 0.45 * (1 + math.cos(math.pi * progress)))


def save_checkpoint(out: str, step: int, state: dict, keep: int = 2) -> None:
    """Write ``out/step-<step>.pt`` atomically (temporary file, fsync, rename: a crash never
    leaves half a checkpoint), then drop all but the ``keep`` newest."""
    path = os.path.join(out, f"step-{step:08d}.pt")
    with open(f"{path}.tmp", "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(f"{path}.tmp", path)
    for old in checkpoints(out)[:-keep]:
        os.remove(old)


def checkpoints(out: str, dcp: bool = False) -> list[str]:
    """The finished checkpoints in ``out``, oldest first (``step-N.pt``, or ``dcp-step-N``)."""
    if not os.path.isdir(out):
        return []
    if dcp:
        names = sorted(n for n in os.listdir(out) if n.startswith("dcp-step-") and not n.endswith(".tmp"))
    else:
        names = sorted(n for n in os.listdir(out) if n.startswith("step-") and n.endswith(".pt"))
    return [os.path.join(out, n) for n in names]


class TrainState:
    """Model, optimizer and step as one DCP ``Stateful`` (FQN-keyed, so any number of ranks
    can load it)."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, step: int = 0) -> None:
        self.model, self.optimizer, self.step = model, optimizer, step

    def state_dict(self) -> dict:
        from torch.distributed.checkpoint.state_dict import get_state_dict

        model, optimizer = get_state_dict(self.model, self.optimizer)
        return {"model": model, "optimizer": optimizer, "step": self.step}

    def load_state_dict(self, state: dict) -> None:
        from torch.distributed.checkpoint.state_dict import set_state_dict

        set_state_dict(self.model, self.optimizer, model_state_dict=state["model"],
                       optim_state_dict=state["optimizer"])
        self.step = state["step"]


def save_dcp(out: str, train: TrainState, loader: fastdata.DataLoader, rank: int, keep: int = 2) -> None:
    """Every rank writes its part of ``out/dcp-step-<step>`` (collective); rank 0 then renames
    the finished directory into place and drops all but the ``keep`` newest."""
    import shutil

    import torch.distributed.checkpoint as dcp

    path = os.path.join(out, f"dcp-step-{train.step:08d}")
    dcp.save({"train": train, "loader": loader}, checkpoint_id=f"{path}.tmp")
    if rank == 0:
        shutil.rmtree(path, ignore_errors=True)
        os.replace(f"{path}.tmp", path)
        for old in checkpoints(out, dcp=True)[:-keep]:
            shutil.rmtree(old)


# --------------------------------------------------------------------------- training


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True, help="packed dataset: a directory or a URL")
    p.add_argument("--out", required=True, help="directory for the checkpoints (step-<N>.pt)")
    p.add_argument("--resume", action="store_true", help="continue from --out's newest checkpoint, if any")
    p.add_argument("--ckpt-every", type=int, default=100,
                   help="steps between checkpoints (and one at the end)")
    p.add_argument("--cache-dir", help="node-local cache for remote or compressed shards")
    p.add_argument("--cache-limit", help="bytes the node cache may hold, e.g. 400GB")
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--dcp", action="store_true",
                   help="checkpoint with torch.distributed.checkpoint (out/dcp-step-<N>/, every rank writes)")
    add_model_args(p)
    return p.parse_args(argv)


def setup_distributed() -> tuple[int, int, torch.device]:
    """Join the torchrun job (if any): rank, world size and this process's device."""
    rank, world_size = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if torch.cuda.is_available():
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if world_size > 1:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return rank, world_size, device


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    rank, world_size, device = setup_distributed()
    # The dataset reads rank and world size from torchrun's environment and checks them
    # against the process group: each rank gets its own slice of every global batch.
    ds = fastdata.TokenDataset(args.data, seq_len=args.seq_len, shuffle=True, seed=args.seed,
                               storage_options=storage_options_from_env(args.data),
                               cache_dir=args.cache_dir, cache_limit=args.cache_limit)
    loader = fastdata.DataLoader(ds, batch_size=args.batch_size, num_workers=args.num_workers,
                                 pin_memory=device.type == "cuda")
    model = build_model(args, ds.data.manifest.tokenizer.vocab_size).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.1)

    step, saved = 0, checkpoints(args.out, dcp=args.dcp)
    if args.resume and saved and args.dcp:
        import torch.distributed.checkpoint as dcp

        train = TrainState(model, optimizer)
        dcp.load({"train": train, "loader": loader}, checkpoint_id=saved[-1])
        step = train.step
        if rank == 0:
            data = loader.state_dict()
            print(f"resumed at step {step}, data at {data['epoch']}:{data['step']} (DCP)")
    elif args.resume and saved:
        state = torch.load(saved[-1], map_location=device, weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        loader.load_state_dict(state["data"])  # the next iter(loader) starts at the saved batch
        step = state["step"]
        if rank == 0:
            print(f"resumed at step {step}, data at {state['data']['epoch']}:{state['data']['step']}")
    if world_size > 1:
        ids = [device.index] if device.type == "cuda" else None
        model = nn.parallel.DistributedDataParallel(model, device_ids=ids)
    os.makedirs(args.out, exist_ok=True)

    log = BatchLog(args.log_batches, rank, world_size)
    meter = Meter(args.batch_size * args.seq_len * world_size)
    batches = iter(loader)
    while step < args.steps:
        batch = meter.next_batch(batches)
        if batch is None:  # end of an epoch: the next iter() is the next epoch
            batches = iter(loader)
            continue
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, args)
        inputs = batch["input_ids"].to(device, non_blocking=True)
        labels = batch["labels"].to(device, non_blocking=True)
        loss = model(inputs, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        log.write(step, batch, loss)
        step += 1
        meter.steps += 1
        if rank == 0 and (step % args.log_every == 0 or step == args.steps):
            print(f"step {step}: loss {loss.item():.4f}", flush=True)
        if args.dcp and (step % args.ckpt_every == 0 or step == args.steps):
            raw = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
            save_dcp(args.out, TrainState(raw, optimizer, step), loader, rank)
        elif rank == 0 and (step % args.ckpt_every == 0 or step == args.steps):
            # loader.state_dict() points at the next batch; it is the same on every rank.
            raw = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
            save_checkpoint(args.out, step, {"model": raw.state_dict(), "optimizer": optimizer.state_dict(),
                                             "data": loader.state_dict(), "step": step})
    if rank == 0:
        print(meter.report())
    if world_size > 1:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
