"""Protobuf wire bytes written by hand, for requests spelled around the edge's counter."""

from __future__ import annotations


def varint(value: int) -> bytes:
    """``value`` as a protobuf base-128 varint (least significant group first)."""
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)
