"""Train the zstd dictionary that stored account states are compressed with.

Folds a year of synthetic history (``common.fold_history``, the default definitions)
into account states and trains a 4 KiB zstd dictionary on their stored form before
compression: the packed MessagePack of format 2 (``worker.adapters.state_packing``), or with
``--json`` the JSON of format 1. States are small and alike in their keys and structure,
which is what a dictionary captures: format 1's JSON compressed to about a third with it,
to about half without.

The dictionary is part of the storage format: ``worker/adapters/state.zdict`` must never be
replaced in place, since the stored states name it by its id. A new one (after the state
layout changed a lot) is added next to it and registered in ``worker.adapters.state_codec``;
so the script writes a new file and refuses to overwrite one.

    .venv/bin/python bench/train_state_dictionary.py [--accounts 600] \
        [--json] [--out worker/adapters/state-new.zdict]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pydantic_core
import zstandard
from common import ROOT, fold_history

from worker.adapters.state_packing import pack


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=600)
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--json", action="store_true", help="train on JSON (format 1)")
    parser.add_argument(
        "--out", type=Path, default=ROOT / "worker" / "adapters" / "state-new.zdict"
    )
    args = parser.parse_args()
    if args.out.exists():
        raise SystemExit(f"{args.out} exists: stored states name their dictionary by id")
    history = fold_history(args.accounts, 365, seed=1)
    encode = pydantic_core.to_json if args.json else pack
    samples = [encode(state.to_dict()) for state in history.states]
    dictionary = zstandard.train_dictionary(args.size, samples)
    args.out.write_bytes(dictionary.as_bytes())
    print(f"{args.out}: {len(dictionary.as_bytes())} bytes, dict id {dictionary.dict_id()}")


if __name__ == "__main__":
    main()
