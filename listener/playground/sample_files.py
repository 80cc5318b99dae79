"""Small valid result files, as the AI server makes them: a GLB, an STL and a PNG."""

from __future__ import annotations

import hashlib
import json
import struct
import zlib

# One triangle's three vertices, the mesh every sample GLB holds.
_TRIANGLE = struct.pack("<9f", 0, 0, 0, 1, 0, 0, 0, 1, 0)


def _gltf_json(bin_len: int, seed: bytes) -> bytes:
    gltf = {
        "asset": {
            "version": "2.0",
            "generator": "listener.playground.simulator",
            "extras": {"seed": seed.hex()},
        },
        "scene": 0,
        "scenes": [{"nodes": [0]}],
        "nodes": [{"mesh": 0}],
        "meshes": [{"primitives": [{"attributes": {"POSITION": 0}}]}],
        "accessors": [
            {
                "bufferView": 0,
                "componentType": 5126,
                "count": 3,
                "type": "VEC3",
                "min": [0, 0, 0],
                "max": [1, 1, 0],
            }
        ],
        "bufferViews": [{"buffer": 0, "byteOffset": 0, "byteLength": len(_TRIANGLE)}],
        "buffers": [{"byteLength": bin_len}],
    }
    text = json.dumps(gltf, separators=(",", ":")).encode()
    return text + b" " * (-len(text) % 4)


def build_glb(payload_size: int, seed: bytes) -> bytes:
    """Return a valid binary glTF (one triangle) of about `payload_size` bytes, seeded by `seed`."""
    bin_len = len(_TRIANGLE)
    for _ in range(3):  # the JSON states the BIN length, so its own length depends on it
        room = payload_size - 28 - len(_gltf_json(bin_len, seed))
        bin_len = max(len(_TRIANGLE), room - room % 4)
    text = _gltf_json(bin_len, seed)
    body = _TRIANGLE + hashlib.shake_256(seed).digest(bin_len - len(_TRIANGLE))
    header = struct.pack("<4sII", b"glTF", 2, 28 + len(text) + len(body))
    json_chunk = struct.pack("<I4s", len(text), b"JSON") + text
    return header + json_chunk + struct.pack("<I4s", len(body), b"BIN\x00") + body


def build_stl(seed: bytes) -> bytes:
    """Return a small valid binary STL (a tetrahedron) whose header carries `seed`."""
    a, b, c, d = (0.0, 0.0, 0.0), (10.0, 0.0, 0.0), (0.0, 10.0, 0.0), (0.0, 0.0, 10.0)
    faces = [(a, c, b), (a, b, d), (a, d, c), (b, c, d)]
    header = hashlib.sha256(seed).hexdigest().encode().ljust(80, b" ")
    rows = [struct.pack("<12fH", 0, 0, 0, *p, *q, *r, 0) for p, q, r in faces]
    return header + struct.pack("<I", len(faces)) + b"".join(rows)


def build_png(seed: bytes) -> bytes:
    """Return a valid 8x8 PNG of one colour derived from `seed`."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    colour = hashlib.sha256(seed).digest()[:3]
    pixels = b"".join(b"\x00" + colour * 8 for _ in range(8))
    ihdr = struct.pack(">IIBBBBB", 8, 8, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + b"".join(
        [chunk(b"IHDR", ihdr), chunk(b"IDAT", zlib.compress(pixels)), chunk(b"IEND", b"")]
    )
