"""How an account state is stored, and every form it was stored in before.

The first byte tells the forms apart (``decode_state_data`` reads them all):

- format 2 (written since 2026-12-04): the byte ``0x02``, then a zstd frame (dictionary
  ``state-2.zdict``) of the packed MessagePack form (``worker.adapters.state_packing``:
  row tables by column, money in cents, digests as bytes): about 27 % smaller than
  format 1 on a year of history (``bench/memory.py``);
- format 1: a zstd frame (magic ``28 b5 2f fd``, dictionary ``state.zdict``) of the JSON;
  still written for a state the packed form cannot hold exactly (``NotPackable``: a lone
  surrogate in a name, an integer beyond 64 bits), so that nothing is ever rounded;
- before that: plain JSON (``{``) and zlib (``0x78``).

The dictionaries are part of the format: frames name them by id, so a file is never
replaced; a new one comes with a new format byte.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pydantic_core
import zstandard

from worker.adapters.state_packing import NotPackable, pack, unpack
from worker.core.features import AccountState

#: zstd dictionaries of stored states (trained by ``bench/train_state_dictionary.py``):
#: small states alike in keys and structure compress about 3x with one, 2x without.
_DICTIONARIES = Path(__file__).parent
JSON_DICTIONARY = zstandard.ZstdCompressionDict((_DICTIONARIES / "state.zdict").read_bytes())
PACKED_DICTIONARY = zstandard.ZstdCompressionDict((_DICTIONARIES / "state-2.zdict").read_bytes())
#: Level 3: measured ~12 µs per state (~2.7 KB of JSON -> ~870 bytes); zlib level 1 took
#: 37 µs for ~1,360 bytes. On the packed form, level 6 saves another 4 % for 4x the time.
STATE_ZSTD_LEVEL = 3
_JSON_COMPRESSOR = zstandard.ZstdCompressor(level=STATE_ZSTD_LEVEL, dict_data=JSON_DICTIONARY)
_JSON_DECOMPRESSOR = zstandard.ZstdDecompressor(dict_data=JSON_DICTIONARY)
_PACKED_COMPRESSOR = zstandard.ZstdCompressor(level=STATE_ZSTD_LEVEL, dict_data=PACKED_DICTIONARY)
_PACKED_DECOMPRESSOR = zstandard.ZstdDecompressor(dict_data=PACKED_DICTIONARY)
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
PACKED_FORMAT = b"\x02"


def encode_state(state: AccountState) -> bytes:
    """The stored form of ``state`` (format 2, or 1 where 2 cannot hold it exactly)."""
    return encode_state_data(state.to_dict())


def encode_state_data(data: Mapping[str, Any]) -> bytes:
    """The stored form of an ``AccountState.to_dict()`` (for tools writing states directly)."""
    try:
        return PACKED_FORMAT + _PACKED_COMPRESSOR.compress(pack(data))
    except NotPackable:
        return encode_json_state_data(data)


def encode_json_state_data(data: Mapping[str, Any]) -> bytes:
    """Format 1: the JSON of ``data``, zstd-compressed with ``state.zdict``."""
    try:
        raw = pydantic_core.to_json(data, inf_nan_mode="constants")
    except pydantic_core.PydanticSerializationError:
        # Not UTF-8 encodable (a lone surrogate): the stdlib escapes it.
        raw = json.dumps(data, separators=(",", ":")).encode()
    return _JSON_COMPRESSOR.compress(raw)


def decode_state(account_id: str, raw: bytes | None) -> AccountState:
    if raw is None:
        return AccountState(account_id)
    return AccountState.from_dict(decode_state_data(raw))


def decode_state_data(raw: bytes) -> dict[str, Any]:
    """The ``AccountState.to_dict()`` stored as ``raw`` (in any of the forms above)."""
    if raw[:1] == PACKED_FORMAT:
        return unpack(_PACKED_DECOMPRESSOR.decompress(raw[1:]))
    if raw[:4] == _ZSTD_MAGIC:
        raw = _JSON_DECOMPRESSOR.decompress(raw)
    elif raw[:1] != b"{":
        raw = zlib.decompress(raw)
    try:
        data: dict[str, Any] = pydantic_core.from_json(raw, cache_strings="keys")
    except ValueError:
        # The stdlib writes lone surrogates as escapes, which pydantic-core rejects.
        data = json.loads(raw)
    return data
