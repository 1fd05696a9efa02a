"""TFRecord framing without TensorFlow: write, read and verify records.

A record is ``uint64 length | uint32 masked_crc32c(length) | data | uint32 masked_crc32c(data)``
(little endian). DALI reads records through an index and never checks these CRCs,
so every shard is verified here when it is written and when it is indexed.
"""
from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import BinaryIO, Iterator

import google_crc32c

from effnet.core.errors import UserError

HEADER = struct.Struct("<QI")
FOOTER = struct.Struct("<I")
_MASK_DELTA = 0xA282EAD8


class CorruptShardError(UserError):
    """A shard that is truncated or fails a CRC check."""

    def __init__(self, path: str | Path, offset: int, reason: str) -> None:
        super().__init__(f"{path}: corrupt TFRecord at byte offset {offset}: {reason}")
        self.path, self.offset, self.reason = str(path), offset, reason

    def __reduce__(self):  # picklable across worker processes
        return type(self), (self.path, self.offset, self.reason)


def masked_crc(data: bytes) -> int:
    """The masked CRC-32C that TFRecord stores."""
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def encode_record(data: bytes) -> bytes:
    """One framed record holding ``data``."""
    length = struct.pack("<Q", len(data))
    return length + FOOTER.pack(masked_crc(length)) + data + FOOTER.pack(masked_crc(data))


def iter_records(path: str | Path, verify: bool = True, first: int = 0) -> Iterator[tuple[int, bytes]]:
    """Yield ``(offset, data)`` for each record of a shard from record ``first`` on, raising
    CorruptShardError on damage; the records before ``first`` are stepped over by their headers."""
    with open(path, "rb") as f:
        yield from _iter_stream(f, path, os.fstat(f.fileno()).st_size, verify, first)


def _iter_stream(f: BinaryIO, path: str | Path, size: int, verify: bool, first: int) -> Iterator[tuple[int, bytes]]:
    offset = 0
    for _ in range(first):
        header = f.read(HEADER.size)
        if len(header) < HEADER.size:
            raise CorruptShardError(path, offset, f"truncated header ({len(header)} of {HEADER.size} bytes)")
        offset += HEADER.size + HEADER.unpack(header)[0] + FOOTER.size
        f.seek(offset)
    while offset < size:
        header = f.read(HEADER.size)
        if len(header) < HEADER.size:
            raise CorruptShardError(path, offset, f"truncated header ({len(header)} of {HEADER.size} bytes)")
        length, length_crc = HEADER.unpack(header)
        if verify and masked_crc(header[:8]) != length_crc:
            raise CorruptShardError(path, offset, "length CRC mismatch (not a TFRecord file, or damaged)")
        end = offset + HEADER.size + length + FOOTER.size
        if end > size:
            raise CorruptShardError(path, offset, f"truncated record (needs {end} bytes, file has {size})")
        data = f.read(length)
        (data_crc,) = FOOTER.unpack(f.read(FOOTER.size))
        if verify and masked_crc(data) != data_crc:
            raise CorruptShardError(path, offset, "data CRC mismatch")
        yield offset, data
        offset = end


def record_spans(path: str | Path) -> list[tuple[int, int]]:
    """``(offset, size)`` of every record after verifying the whole shard (the DALI index)."""
    return [(offset, HEADER.size + len(data) + FOOTER.size) for offset, data in iter_records(path)]
