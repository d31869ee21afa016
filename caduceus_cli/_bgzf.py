"""A BGZF writer over any binary stream (stdout included): gzip members of at most 64 KiB with the
'BC' extra field, ending with the standard empty EOF block, so that gzip, bgzip and tabix read it.
"""

from __future__ import annotations

import io
import struct
import zlib
from typing import IO

BLOCK_DATA = 0xFF00  # uncompressed bytes per block, as htslib uses
EOF_BLOCK = bytes.fromhex("1f8b08040000000000ff0600424302001b0003000000000000000000")


def _block(data: bytes, level: int) -> bytes:
    compressor = zlib.compressobj(level, zlib.DEFLATED, -15)
    payload = compressor.compress(data) + compressor.flush()
    size = len(payload) + 25  # header 18 + payload + crc 4 + isize 4, minus one (BSIZE is total - 1)
    header = b"\x1f\x8b\x08\x04" + b"\x00" * 4 + b"\x00\xff" + struct.pack("<H", 6) + b"BC" + struct.pack("<HH", 2, size)
    return header + payload + struct.pack("<II", zlib.crc32(data) & 0xFFFFFFFF, len(data))


class BgzfWriter(io.RawIOBase):
    """Binary writer: ``write`` buffers, full blocks go to ``raw``; ``close`` writes the EOF block.

    ``raw`` is flushed but not closed.
    """

    def __init__(self, raw: IO[bytes], level: int = 6):
        super().__init__()
        self._raw, self._level, self._buffer = raw, level, bytearray()

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        self._buffer += data
        while len(self._buffer) >= BLOCK_DATA:
            self._raw.write(_block(bytes(self._buffer[:BLOCK_DATA]), self._level))
            del self._buffer[:BLOCK_DATA]
        return len(data)

    def flush(self) -> None:
        if not self.closed:
            self._raw.flush()

    def close(self) -> None:
        if self.closed:
            return
        if self._buffer:
            self._raw.write(_block(bytes(self._buffer), self._level))
            self._buffer.clear()
        self._raw.write(EOF_BLOCK)
        self._raw.flush()
        super().close()
