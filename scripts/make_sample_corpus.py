"""Regenerate the small bundled corpus in examples/corpus/ (committed; no download).

The documents are docstrings of Python standard-library modules, classes and functions
(real English and code, with Unicode added to a few), so the demo packs realistic text.
Run with the Python the corpus was made with to get the same files:
    python scripts/make_sample_corpus.py
"""

from __future__ import annotations

import importlib
import inspect
import json
import os

import pyarrow as pa
import pyarrow.parquet as pq

MODULES = [
    "abc", "argparse", "array", "base64", "bisect", "calendar", "collections", "contextlib",
    "copy", "csv", "dataclasses", "datetime", "decimal", "difflib", "enum", "fractions",
    "functools", "gzip", "hashlib", "heapq", "hmac", "html", "itertools", "json", "logging",
    "math", "operator", "os", "pathlib", "pickle", "queue", "random", "re", "shutil",
    "socket", "sqlite3", "statistics", "string", "struct", "subprocess", "tarfile",
    "tempfile", "textwrap", "threading", "time", "typing", "unittest", "uuid", "zipfile",
]
UNICODE = ["naïve café", "Ελληνικά", "日本語のテキスト", "emoji 🚀✨", "Привет, мир"]


def docstrings() -> list[str]:
    docs = []
    for name in MODULES:
        module = importlib.import_module(name)
        seen = set()
        for obj in [module, *(getattr(module, a, None) for a in sorted(dir(module)))]:
            doc = inspect.getdoc(obj) if obj is not None else None
            if doc and len(doc) > 40 and doc not in seen:
                seen.add(doc)
                docs.append(doc)
    return docs


def main() -> None:
    out = os.path.join(os.path.dirname(__file__), "..", "examples", "corpus")
    os.makedirs(out, exist_ok=True)
    docs = docstrings()
    for i, u in enumerate(UNICODE):
        docs[i * 7] = f"{u}: {docs[i * 7]}"
    split = len(docs) * 3 // 4
    with open(os.path.join(out, "stdlib_docs.jsonl"), "w", encoding="utf-8") as f:
        for i, d in enumerate(docs[:split]):
            f.write(json.dumps({"id": i, "text": d}, ensure_ascii=False) + "\n")
    table = pa.table({"id": list(range(split, len(docs))), "text": docs[split:]})
    pq.write_table(table, os.path.join(out, "stdlib_docs.parquet"), row_group_size=256)
    chats = []
    for d in docs[:64]:
        first = d.split("\n", 1)[0]
        chats.append({"messages": [
            {"role": "system", "content": "You explain Python's standard library."},
            {"role": "user", "content": f"What does this do? {first}"},
            {"role": "assistant", "content": d[:400]},
        ]})
    with open(os.path.join(out, "chat.jsonl"), "w", encoding="utf-8") as f:
        for c in chats:
            f.write(json.dumps(c, ensure_ascii=False) + "\n")
    print(f"{split} jsonl docs, {len(docs) - split} parquet docs, {len(chats)} chats in {out}")


if __name__ == "__main__":
    main()
