"""How an account state is stored: its JSON, zstd-compressed with a trained dictionary.

Part of the storage format: ``state.zdict`` is named by id in every frame, so it is
never replaced (a new one would be added beside it). ``decode_state_data`` also reads
the forms stored before: plain JSON and zlib.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pydantic_core
import zstandard

from worker.core.features import AccountState

#: zstd dictionary of stored states (trained by ``bench/train_state_dictionary.py``):
#: small states alike in keys and structure compress about 3x with it, 2x without.
#: Part of the storage format: frames name it by id, so never replace the file.
STATE_DICTIONARY = zstandard.ZstdCompressionDict(
    (Path(__file__).parent / "state.zdict").read_bytes()
)
#: Level 3: measured ~12 µs per state (~2.7 KB of JSON -> ~870 bytes); zlib level 1 took
#: 37 µs for ~1,360 bytes.
STATE_ZSTD_LEVEL = 3
_COMPRESSOR = zstandard.ZstdCompressor(level=STATE_ZSTD_LEVEL, dict_data=STATE_DICTIONARY)
_DECOMPRESSOR = zstandard.ZstdDecompressor(dict_data=STATE_DICTIONARY)
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def encode_state(state: AccountState) -> bytes:
    """The stored form of ``state``: its JSON, zstd-compressed with the state dictionary."""
    return encode_state_data(state.to_dict())


def encode_state_data(data: Mapping[str, Any]) -> bytes:
    """The stored form of an ``AccountState.to_dict()`` (for tools writing states directly).

    ``decode_state_data`` tells the forms apart by their first bytes: a zstd frame,
    plain JSON (``{``: states stored before compression) or zlib (``0x78``).
    """
    try:
        raw = pydantic_core.to_json(data, inf_nan_mode="constants")
    except pydantic_core.PydanticSerializationError:
        # Not UTF-8 encodable (a lone surrogate): the stdlib escapes it.
        raw = json.dumps(data, separators=(",", ":")).encode()
    return _COMPRESSOR.compress(raw)


def decode_state(account_id: str, raw: bytes | None) -> AccountState:
    if raw is None:
        return AccountState(account_id)
    return AccountState.from_dict(decode_state_data(raw))


def decode_state_data(raw: bytes) -> dict[str, Any]:
    """The ``AccountState.to_dict()`` stored as ``raw`` (by ``encode_state_data``)."""
    if raw[:4] == _ZSTD_MAGIC:
        raw = _DECOMPRESSOR.decompress(raw)
    elif raw[:1] != b"{":
        raw = zlib.decompress(raw)
    try:
        data: dict[str, Any] = pydantic_core.from_json(raw, cache_strings="keys")
    except ValueError:
        # The stdlib writes lone surrogates as escapes, which pydantic-core rejects.
        data = json.loads(raw)
    return data
