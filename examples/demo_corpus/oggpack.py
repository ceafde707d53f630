"""Make libsndfile's Ogg/Opus output small and reproducible: fixed stream serial, no tag padding."""

from __future__ import annotations

_POLY = 0x04C11DB7


def _crc_table() -> list[int]:
    """Return the lookup table of Ogg's CRC-32 (polynomial 0x04C11DB7, MSB first, no reflection)."""
    table = []
    for byte in range(256):
        crc = byte << 24
        for _ in range(8):
            crc = ((crc << 1) ^ _POLY if crc & 0x80000000 else crc << 1) & 0xFFFFFFFF
        table.append(crc)
    return table


_TABLE = _crc_table()


def ogg_crc(page: bytes) -> int:
    """Return the checksum of an Ogg page whose checksum field is zeroed."""
    crc = 0
    for byte in page:
        crc = ((crc << 8) & 0xFFFFFFFF) ^ _TABLE[(crc >> 24) ^ byte]
    return crc


def _u32(data: bytes, pos: int) -> int:
    return int.from_bytes(data[pos : pos + 4], "little")


def _strip_tag_padding(packet: bytes) -> bytes:
    """Return an OpusTags packet without the zero padding libsndfile reserves after the comments."""
    pos = 12 + _u32(packet, 8)  # magic, vendor length, vendor string
    count = _u32(packet, pos)
    pos += 4
    for _ in range(count):
        pos += 4 + _u32(packet, pos)
    return packet[:pos]


def _lacing(size: int) -> bytes:
    """Return the segment table of a page that holds exactly one complete packet of `size` bytes."""
    return bytes([255] * (size // 255) + [size % 255])


def compact_ogg_opus(data: bytes, serial: int) -> bytes:
    """Return the Ogg/Opus file `data` with stream serial `serial` and an unpadded OpusTags packet.

    libsndfile draws the serial from the clock (so two runs differ byte for byte) and pads the tag
    packet to ~800 bytes, more than a short utterance's audio; the Opus spec lets both be changed.
    """
    pages = []
    pos = 0
    while pos < len(data):
        if data[pos : pos + 4] != b"OggS":
            raise ValueError(f"not an Ogg page at byte {pos}")
        segments = data[pos + 27 : pos + 27 + data[pos + 26]]
        start = pos + 27 + len(segments)
        header, body = bytearray(data[pos : pos + 27]), data[start : start + sum(segments)]
        pos = start + len(body)
        if body.startswith(b"OpusTags"):
            # libsndfile writes the tag packet alone on its own page, so it can be re-laced here.
            body = _strip_tag_padding(body)
            segments = _lacing(len(body))
        header[14:18] = serial.to_bytes(4, "little")
        header[22:26] = bytes(4)
        header[26] = len(segments)
        page = bytearray(header + segments + body)
        page[22:26] = ogg_crc(page).to_bytes(4, "little")
        pages.append(bytes(page))
    return b"".join(pages)
