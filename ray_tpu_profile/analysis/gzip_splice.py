"""One gzip file from pieces compressed elsewhere, without decompressing them (as pigz
joins its blocks): each piece is a raw deflate stream ended by a sync flush (byte
aligned, no final block) with its CRC-32 and length; the pieces' deflate data are
concatenated, a final empty block ends the stream, and the CRC-32s are combined
(zlib's crc32_combine, which Python's zlib does not expose). The result is an ordinary
single-member gzip file that every reader opens.

A piece never refers back past its own start (its compressor began with an empty
window), so the concatenation is a valid deflate stream."""

from __future__ import annotations

import functools
import struct
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

LEVEL = 6
GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
"""Magic, deflate, no flags, no mtime (the same bytes for the same content), OS unknown."""


@dataclass(frozen=True)
class Piece:
    deflate: bytes
    crc32: int
    length: int
    """Uncompressed bytes."""


def compress(data: bytes) -> Piece:
    compressor = zlib.compressobj(LEVEL, zlib.DEFLATED, -zlib.MAX_WBITS)
    return Piece(compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH), zlib.crc32(data), len(data))


def decompress(piece: Piece) -> bytes:
    """The piece's data (ValueError where it is not what its CRC-32 and length say)."""
    data = zlib.decompressobj(-zlib.MAX_WBITS).decompress(piece.deflate)
    if len(data) != piece.length or zlib.crc32(data) != piece.crc32:
        raise ValueError(f"a compressed piece holds {len(data)} bytes, not the {piece.length} it says, or another CRC")
    return data


def write_gzip(path: Path, pieces: Iterable[Piece]) -> None:
    """The pieces' data, in order, as one gzip file at path."""
    crc, length = 0, 0
    with open(path, "wb") as f:
        f.write(GZIP_HEADER)
        for piece in pieces:
            f.write(piece.deflate)
            crc, length = crc32_combine(crc, piece.crc32, piece.length), length + piece.length
        f.write(zlib.compressobj(LEVEL, zlib.DEFLATED, -zlib.MAX_WBITS).flush(zlib.Z_FINISH))  # the final block
        f.write(struct.pack("<II", crc, length & 0xFFFFFFFF))


def _gf2_times(matrix: list[int], vector: int) -> int:
    total, i = 0, 0
    while vector:
        if vector & 1:
            total ^= matrix[i]
        vector >>= 1
        i += 1
    return total


def _gf2_square(matrix: list[int]) -> list[int]:
    return [_gf2_times(matrix, row) for row in matrix]


@functools.cache
def _zero_bytes_operator(power: int) -> tuple[int, ...]:
    """The CRC-32 operator that appends 2**power zero bytes: squared from the one before,
    each made once per process (a piece's combine then costs a product per bit of its length)."""
    if power == 0:
        one_bit = [0xEDB88320] + [1 << n for n in range(31)]  # the operator for one zero bit
        return tuple(_gf2_square(_gf2_square(_gf2_square(one_bit))))  # 2, 4, 8 bits: one byte
    return tuple(_gf2_square(list(_zero_bytes_operator(power - 1))))


def crc32_combine(crc1: int, crc2: int, length2: int) -> int:
    """CRC-32 of A + B from CRC-32(A), CRC-32(B) and len(B), as zlib's crc32_combine: CRC(A)
    carried through len(B) zero bytes, one operator per set bit of len(B), then CRC(B)."""
    power = 0
    while length2 > 0:
        if length2 & 1:
            crc1 = _gf2_times(list(_zero_bytes_operator(power)), crc1)
        length2 >>= 1
        power += 1
    return crc1 ^ crc2
