"""Text files people write (captions, manifests, prompt lists), read as what they say.

Windows editors (Notepad, Excel's "CSV UTF-8") begin UTF-8 files with a byte-order mark:
read as plain UTF-8 it became part of the first caption, or of the first CSV column's name
(then "missing column path"). Text in another encoding is refused in one line naming the
file and the first byte that is not UTF-8, instead of a decoder's message without a name.
"""

from __future__ import annotations

from pathlib import Path

from lightning_sdm.errors import UserInputError

# Python's codec for UTF-8 that drops a leading byte-order mark.
UTF8_WITH_OPTIONAL_MARK = "utf-8-sig"


def decode_user_text(data: bytes, name: str | Path) -> str:
    try:
        return data.decode(UTF8_WITH_OPTIONAL_MARK)
    except UnicodeDecodeError as error:
        raise UserInputError(
            f"{name} is not UTF-8 text (byte 0x{data[error.start]:02x} at offset "
            f"{error.start}): save it as UTF-8"
        ) from error


def read_user_text(path: str | Path) -> str:
    """The file's text: UTF-8, a leading byte-order mark dropped (OSError as it comes)."""
    return decode_user_text(Path(path).read_bytes(), path)
