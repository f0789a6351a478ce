"""Text out of image files without decoding a pixel: PNG text chunks (tEXt, zTXt, iTXt), and the
EXIF UserComment and COM comment of JPEG and WebP files (where A1111 writes its infotext:
`modules/images.py`, piexif `UserComment.dump(..., encoding="unicode")`).

Every chunk is read with a size limit and decompressed with a cap, so a 50 MB chunk or a
compression bomb is a one-line error, never a hang or a 50 MB input line. Stdlib and Pillow's
EXIF parser (`Image.Exif`, which needs no image) only.
"""

from __future__ import annotations

import errno
import struct
import zlib
from pathlib import Path

from ...line.safetext import shorten
from ...weights.files import NotRegular, open_regular
from .common import MAX_CHUNK, MAX_TEXT_TOTAL, MetadataError

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
EXIF_IFD, USER_COMMENT = 0x8769, 0x9286


def _mb(n: int) -> str:
    return f"{n / (1 << 20):.1f} MB" if n >= 1 << 20 else f"{n} bytes"


def _inflate(data: bytes, what: str) -> bytes:
    d = zlib.decompressobj()
    try:
        out = d.decompress(data, MAX_CHUNK + 1)
    except zlib.error as e:
        raise MetadataError(f"{what} is corrupt ({e})") from None
    if len(out) > MAX_CHUNK or d.unconsumed_tail:
        raise MetadataError(f"{what} inflates to more than {_mb(MAX_CHUNK)}; not read (a compression bomb?)")
    return out


def _decode_text(ctype: bytes, body: bytes) -> tuple[str, str]:
    key, _, rest = body.partition(b"\0")
    name = key.decode("latin-1", "replace")
    what = f"the '{name[:40]}' text chunk"
    if ctype == b"tEXt":
        return name, rest.decode("latin-1")
    if ctype == b"zTXt":
        return name, _inflate(rest[1:], what).decode("latin-1")
    flag, _method, rest = rest[0:1], rest[1:2], rest[2:]      # iTXt
    _lang, _, rest = rest.partition(b"\0")
    _tkey, _, text = rest.partition(b"\0")
    if flag == b"\x01":
        text = _inflate(text, what)
    return name, text.decode("utf-8", "replace")


def _ended_early(head: bytes, text_key: str | None) -> str:
    """The note for a PNG that stops before its IEND chunk: what was cut, and that what came before is whole."""
    if text_key is not None:
        where = f"inside its '{text_key[:40]}' text chunk, which is not read"
    elif len(head) >= 8:
        where = f"inside its {head[4:8].decode('latin-1', 'replace')!r} chunk"
    else:
        where = "before its IEND chunk"
    return f"the file ends early ({where}; the text chunks before the cut are whole)"


def png_text(path: Path, f) -> tuple[dict[str, str], list[str]]:
    """The PNG's text chunks (f: the open file) and the lines saying which were skipped (too large, or cut
    off by the end of the file); pixels are skipped."""
    chunks: dict[str, str] = {}
    skipped: list[str] = []
    total = 0
    f.seek(0)
    if f.read(8) != PNG_MAGIC:
        raise MetadataError(f"{path}: not a readable image (not a PNG, JPEG or WebP file)")
    size = f.seek(0, 2)
    f.seek(8)
    while True:
        head = f.read(8)
        if len(head) < 8:
            skipped.append(_ended_early(head, None))
            break
        length, ctype = struct.unpack(">I4s", head)
        if ctype == b"IEND":
            break
        if f.tell() + length + 4 > size:    # the chunk (or its CRC) runs past the end of the file
            key = f.read(min(length, 80)).partition(b"\0")[0].decode("latin-1", "replace") \
                if ctype in (b"tEXt", b"zTXt", b"iTXt") else None
            skipped.append(_ended_early(head, key))
            break
        if ctype not in (b"tEXt", b"zTXt", b"iTXt"):
            f.seek(length + 4, 1)
            continue
        if length > MAX_CHUNK or total + length > MAX_TEXT_TOTAL:
            key = f.read(min(length, 80)).partition(b"\0")[0].decode("latin-1", "replace")
            f.seek(length - min(length, 80) + 4, 1)
            skipped.append(f"the '{key}' text chunk ({_mb(length)}, over the {_mb(MAX_CHUNK)} limit)")
            continue
        body = f.read(length)
        f.seek(4, 1)
        total += length
        try:
            key, text = _decode_text(ctype, body)
        except MetadataError as e:
            skipped.append(str(e))
            continue
        chunks.setdefault(key, text)
    return chunks, skipped


def _user_comment(raw: bytes) -> str | None:
    """Decode an EXIF UserComment: 8 bytes naming the charset, then the text."""
    prefix, body = raw[:8], raw[8:]
    if prefix == b"UNICODE\0":
        # piexif writes UTF-16 big-endian; some writers little-endian: the zero bytes tell which
        be = sum(1 for b in body[0::2] if b == 0) >= sum(1 for b in body[1::2] if b == 0)
        return body.decode("utf-16-be" if be else "utf-16-le", "replace").rstrip("\0")
    if prefix in (b"ASCII\0\0\0", b"\0" * 8):
        return body.decode("utf-8", "replace").rstrip("\0")
    return raw.decode("utf-8", "replace").rstrip("\0") if raw else None


def _exif_text(tiff: bytes) -> str | None:
    from PIL import Image
    exif = Image.Exif()
    try:
        exif.load(tiff)
        comment = exif.get_ifd(EXIF_IFD).get(USER_COMMENT)
    except Exception:   # Pillow raises many kinds on a broken TIFF; a broken EXIF is only "no comment"
        return None
    if isinstance(comment, str):
        return comment
    return _user_comment(comment) if isinstance(comment, bytes) else None


def jpeg_text(f) -> dict[str, str]:
    """{'exif': UserComment, 'comment': COM} of a JPEG (f: the open file), reading segment headers only."""
    out: dict[str, str] = {}
    f.seek(0)
    f.read(2)
    while True:
        head = f.read(4)
        if len(head) < 4 or head[0] != 0xFF or head[1] in (0xD9, 0xDA):   # EOI, or the scan starts
            break
        marker, length = head[1], struct.unpack(">H", head[2:])[0]
        data = f.read(max(length - 2, 0))
        if marker == 0xE1 and data.startswith(b"Exif\0\0") and "exif" not in out:
            text = _exif_text(data)
            if text:
                out["exif"] = text
        elif marker == 0xFE and "comment" not in out:
            out["comment"] = data.decode("utf-8", "replace")
    return out


def webp_text(f) -> tuple[dict[str, str], list[str]]:
    """{'exif': UserComment} of a WebP (its RIFF `EXIF` chunk; f: the open file)."""
    out: dict[str, str] = {}
    skipped: list[str] = []
    f.seek(0)
    f.read(12)
    while True:
        head = f.read(8)
        if len(head) < 8:
            break
        ctype, length = head[:4], struct.unpack("<I", head[4:])[0]
        if ctype == b"EXIF":
            if length > MAX_CHUNK:
                skipped.append(f"the EXIF chunk ({_mb(length)}, over the {_mb(MAX_CHUNK)} limit)")
            else:
                data = f.read(length)
                text = _exif_text(data[6:] if data.startswith(b"Exif\0\0") else data)
                if text:
                    out["exif"] = text
                f.seek(length % 2, 1)
                continue
        f.seek(length + length % 2, 1)
    return out, skipped


def read_texts(path: Path) -> tuple[str, dict[str, str], list[str]]:
    """(kind, {name: text}, skipped) for a PNG, JPEG or WebP file; MetadataError for others (a FIFO, a
    device or a folder is refused before a byte is read: reading one would block or never end)."""
    try:
        with open_regular(path) as f:
            magic = f.read(12)
            if magic.startswith(PNG_MAGIC):
                chunks, skipped = png_text(path, f)
                return "PNG", chunks, skipped
            if magic.startswith(b"\xff\xd8"):
                return "JPEG", jpeg_text(f), []
            if magic[:4] == b"RIFF" and magic[8:12] == b"WEBP":
                texts, skipped = webp_text(f)
                return "WebP", texts, skipped
    except FileNotFoundError:
        raise MetadataError(f"{path}: no such file") from None
    except NotRegular as e:
        raise MetadataError(f"{e.strerror}, not an image") from None
    except OSError as e:
        if e.errno == errno.ENAMETOOLONG:
            raise MetadataError(f"{shorten(str(path), 80)}: the name is too long for a file path") from None
        raise MetadataError(f"{path}: not a readable image ({e.strerror or e})") from None
    except ValueError as e:   # a NUL in the name
        raise MetadataError(f"{shorten(str(path), 80)}: not a file name ({e})") from None
    raise MetadataError(f"{path}: not a readable image (not a PNG, JPEG or WebP file)")
