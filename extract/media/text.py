"""Text files as people save them: UTF-8 with or without a byte-order mark, or UTF-16 with its
mark (Excel's "Unicode text"). Anything else is refused, naming the first byte that does not
decode: guessing an encoding would silently store other characters than the author typed
("It’s café" in Windows-1252 read as Latin-1 or replaced by U+FFFD), and the text encoder would
read them without complaint.
"""

from __future__ import annotations

import codecs
from pathlib import Path

from cmarr.extract.media.span import MediaError


def read_text(path: Path, hint: str = "save it as UTF-8") -> str:
    """The decoded text of `path`, its byte-order mark dropped. Raises MediaError naming the file,
    the line and the column of the first byte that is not UTF-8 (ending with `hint`), or saying the
    file is binary."""
    data = Path(path).read_bytes()
    for bom, codec in ((codecs.BOM_UTF16_LE, "utf-16-le"), (codecs.BOM_UTF16_BE, "utf-16-be")):
        if data.startswith(bom):
            try:
                return data[len(bom) :].decode(codec)
            except UnicodeDecodeError:
                raise MediaError(f"{path}: starts with a UTF-16 mark but is not UTF-16 text; {hint}") from None
    data = data.removeprefix(codecs.BOM_UTF8)
    if b"\x00" in data:
        raise MediaError(f"{path}: a binary file (it holds NUL bytes), not text")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line_start = data.rfind(b"\n", 0, err.start) + 1
        line = data.count(b"\n", 0, err.start) + 1
        column = len(data[line_start : err.start].decode("utf-8", errors="replace")) + 1
        raise MediaError(
            f"{path}: not UTF-8 (byte 0x{data[err.start]:02x} at line {line}, column {column}); {hint}"
        ) from None
