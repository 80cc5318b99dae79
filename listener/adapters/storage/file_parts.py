"""One part of a file on disk, read as if it were a file of its own: a multipart upload's body."""

from __future__ import annotations

import io
import os


class FilePart(io.RawIOBase):
    """Bytes `offset` to `offset + length` of an open file descriptor, seekable within that range.

    An upload's part streams from disk through it (the HTTP client reads it in small chunks, in
    its executor) instead of being read into memory whole; `os.pread` leaves the descriptor's
    own position alone, so several parts of one file can be sent at once.
    """

    def __init__(self, fd: int, offset: int, length: int) -> None:
        super().__init__()
        self._fd, self._offset, self._length = fd, offset, length
        self._position = 0

    def __len__(self) -> int:
        return self._length

    def readable(self) -> bool:
        """Always: it is there to be read."""
        return True

    def seekable(self) -> bool:
        """Always: a signer reads the body, then seeks back to send it."""
        return True

    def tell(self) -> int:
        """The position within the part."""
        return self._position

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        """Moves within the part (clamped to it); returns the new position."""
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self._position, os.SEEK_END: self._length}[whence]
        self._position = min(max(base + offset, 0), self._length)
        return self._position

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        """Fills `buffer` from the part; 0 at its end."""
        wanted = min(len(buffer), self._length - self._position)
        if wanted <= 0:
            return 0
        data = os.pread(self._fd, wanted, self._offset + self._position)
        buffer[: len(data)] = data
        self._position += len(data)
        return len(data)
