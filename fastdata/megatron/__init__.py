"""Megatron-Core ``.bin``/``.idx`` datasets: read in place, or import as fastdata shards.

See ``docs/megatron.md``.
"""

from fastdata.megatron.index import MegatronIndex, parse_index, plan_shards
from fastdata.megatron.source import SHARD_BYTES, MegatronDataset, megatron_prefix, open_megatron

__all__ = ["SHARD_BYTES", "MegatronDataset", "MegatronIndex", "megatron_prefix", "open_megatron",
           "parse_index", "plan_shards"]
