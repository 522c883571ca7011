"""Pillow helpers shared by the engine and the API: encoding outputs and decoding inputs safely."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import re
import struct
import zlib
from dataclasses import dataclass
from typing import Any

from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError
from PIL.Image import Image as PILImage
from PIL.PngImagePlugin import PngInfo

from easel.domain.errors import ValidationFailed
from easel.domain.spec import GenerationSpec, OutputFormat

log = logging.getLogger(__name__)

FILTERS = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}
ALLOWED_INPUT_FORMATS = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}
MAX_INPUT_PIXELS = 4096 * 4096
MAX_INPUT_SIDE = 16384


def resample_filter(name: str) -> Image.Resampling:
    try:
        return FILTERS[name]
    except KeyError:
        raise ValueError(f"unknown upscale filter {name!r}; known: {', '.join(FILTERS)}") from None


@dataclass(frozen=True)
class Encoded:
    data: bytes
    mime: str
    width: int
    height: int
    sha256: str


PNG_DEFAULT_LEVEL = 1  # zlib level of a PNG whose request sets no compression: the fastest that compresses


# The provenance label of every image Easel makes (docs/provenance.md): the IPTC digital source type
# "trained algorithmic media" in an XMP packet, as the EU AI Act's Art. 50 asks generated images to be
# marked machine-readably. PNG: an iTXt chunk keyed XML:com.adobe.xmp; JPEG: the APP1 XMP segment; WebP:
# the XMP chunk. `read_source_type` reads it back.
DIGITAL_SOURCE_TYPE = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
XMP_PNG_KEY = "XML:com.adobe.xmp"
PROVENANCE_XMP = (
    '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>'
    '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
    '<rdf:Description rdf:about="" xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/" '
    'xmlns:xmp="http://ns.adobe.com/xap/1.0/">'
    f"<Iptc4xmpExt:DigitalSourceType>{DIGITAL_SOURCE_TYPE}</Iptc4xmpExt:DigitalSourceType>"
    "<xmp:CreatorTool>Easel</xmp:CreatorTool>"
    '</rdf:Description></rdf:RDF></x:xmpmeta><?xpacket end="r"?>'
).encode()
_SOURCE_TYPE = re.compile(rb"<Iptc4xmpExt:DigitalSourceType>([^<]*)</Iptc4xmpExt:DigitalSourceType>")


def encode(
    image: PILImage,
    fmt: OutputFormat,
    compression: int | None = None,
    params: dict[str, str] | None = None,
    *,
    label: bool = True,
) -> Encoded:
    """Encode deterministically (same pixels and params -> same bytes). `compression` 0-100: for
    JPEG/WebP it is 100 - quality; for PNG it maps onto zlib levels 0-9 (default PNG_DEFAULT_LEVEL).

    `params` (the generation parameters, see `generation_params`) are recorded in the file: PNG text
    chunks, one per key (tEXt, or iTXt when a value is not Latin-1); JPEG and WebP: one EXIF
    UserComment holding the params as ASCII JSON (`read_params` reads both back). `label`: the
    provenance XMP (PROVENANCE_XMP), in every format."""
    xmp = PROVENANCE_XMP if label else None
    if fmt is OutputFormat.PNG:
        level = PNG_DEFAULT_LEVEL if compression is None else round(compression * 9 / 100)
        data = png_bytes(image, level, params, xmp)
    else:
        buf = io.BytesIO()
        extra: dict[str, Any] = {} if xmp is None else {"xmp": xmp}
        if params:
            exif = Image.Exif()
            comment = json.dumps(params, ensure_ascii=True, separators=(",", ":"))
            exif.get_ifd(ExifTags.IFD.Exif)[ExifTags.Base.UserComment] = _EXIF_ASCII + comment.encode()
            extra["exif"] = exif.tobytes()
        if fmt is OutputFormat.JPEG:
            image.convert("RGB").save(buf, "JPEG", quality=100 - (compression or 10), **extra)
        else:
            image.save(buf, "WEBP", quality=100 - (compression or 10), **extra)
        data = buf.getvalue()
    return Encoded(data, fmt.mime, image.width, image.height, hashlib.sha256(data).hexdigest())


_PNG_COLOR_TYPE = {"L": 0, "RGB": 2, "LA": 4, "RGBA": 6}  # 8 bits per sample
_PNG_FILTER_UP = 2


def png_bytes(
    image: PILImage, level: int, params: dict[str, str] | None = None, xmp: bytes | None = None
) -> bytes:
    """A PNG of `image` for the hot path: every row filtered with Up (its difference to the row above:
    one numpy subtraction over the whole image) and deflated in one call at zlib `level`, the params as
    text chunks (tEXt, or iTXt when a value is not Latin-1, as Pillow writes them) before the data. The
    same pixels, params and level give the same bytes. Pillow's own writer chooses among five filters
    for every row, which at a fast level costs two to three times the CPU of this whole function for
    files of about the same size. Modes other than L, LA, RGB and RGBA, and installs without numpy (the
    engine's dependency), are written by Pillow at the same level."""
    color = _PNG_COLOR_TYPE.get(image.mode)
    try:
        import numpy as np
    except ImportError:  # pragma: no cover - the engine (the only caller that encodes outputs) has numpy
        color = None
    if color is None:
        info = None
        if params:
            info = PngInfo()
            for k, v in params.items():
                info.add_text(k, v)
        buf = io.BytesIO()
        image.save(buf, "PNG", compress_level=level, pnginfo=info)
        return buf.getvalue()
    width, height = image.size
    rows = np.frombuffer(image.tobytes(), np.uint8).reshape(height, -1)
    data = np.empty((height, rows.shape[1] + 1), np.uint8)
    data[:, 0] = _PNG_FILTER_UP
    data[0, 1:] = rows[0]  # the row above the first is zeros
    np.subtract(rows[1:], rows[:-1], out=data[1:, 1:])  # modulo 256, as the filter is defined
    chunks = [
        b"\x89PNG\r\n\x1a\n",
        _png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, color, 0, 0, 0)),
    ]
    for key, value in (params or {}).items():
        chunks.append(_png_text(key, value))
    if xmp is not None:  # iTXt, uncompressed, no language: where XMP readers look in a PNG
        chunks.append(_png_chunk(b"iTXt", XMP_PNG_KEY.encode("latin-1") + b"\0\0\0\0\0" + xmp))
    chunks.append(_png_chunk(b"IDAT", zlib.compress(data.data, level)))
    chunks.append(_png_chunk(b"IEND", b""))
    return b"".join(chunks)


def _png_chunk(tag: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(body, zlib.crc32(tag)))


def _png_text(key: str, value: str) -> bytes:
    """One text chunk, as Pillow's `PngInfo.add_text` writes it: tEXt for Latin-1 text, else iTXt."""
    name = key.encode("latin-1", "strict")
    try:
        return _png_chunk(b"tEXt", name + b"\0" + value.encode("latin-1", "strict"))
    except UnicodeError:
        return _png_chunk(b"iTXt", name + b"\0\0\0" + b"\0" + b"\0" + value.encode("utf-8"))


_EXIF_ASCII = b"ASCII\0\0\0"  # the character-code prefix of an EXIF UserComment


def generation_params(spec: GenerationSpec, seed: int) -> dict[str, str]:
    """The parameters recorded in an image file (text values; the API record shows the same values):
    prompt, negativePrompt (when set), model, seed (this image's), steps, guidance, size (WxH), loras
    (when the generation applies any: a JSON list of {name, scale}), and `parameters`, the same in the
    one-string form other Stable Diffusion tools read (A1111's, LoRAs as `<lora:name:scale>`)."""
    params = {"prompt": spec.prompt}
    if spec.negative_prompt:
        params["negativePrompt"] = spec.negative_prompt
    params |= {
        "model": str(spec.model),
        "seed": str(seed),
        "steps": str(spec.steps),
        "guidance": str(spec.guidance),
        "size": f"{spec.width}x{spec.height}",
    }
    if spec.loras:
        params["loras"] = json.dumps(
            [{"name": ref.name, "scale": ref.scale} for ref in spec.loras], separators=(",", ":")
        )
    # A1111's notation: each LoRA as `<lora:name:scale>` after the prompt (what those tools parse).
    lines = [" ".join([spec.prompt, *(f"<lora:{ref.name}:{_number(ref.scale)}>" for ref in spec.loras)])]
    if spec.negative_prompt:
        lines.append(f"Negative prompt: {spec.negative_prompt}")
    lines.append(
        f"Steps: {spec.steps}, CFG scale: {spec.guidance}, Seed: {seed}, "
        f"Size: {spec.width}x{spec.height}, Model: {spec.model}"
    )
    params["parameters"] = "\n".join(lines)
    return params


def _number(value: float | None) -> str:
    """A scale as people write it (`0.8`, `1`), exact when the short form is not."""
    if value is None:
        return "1"
    short = f"{value:g}"
    return short if float(short) == value else repr(value)


def read_params(data: bytes) -> dict[str, str]:
    """The parameters `encode` recorded in a PNG, JPEG or WebP file ({} when none)."""
    with Image.open(io.BytesIO(data)) as im:
        im.load()
        if im.format == "PNG":
            return {str(k): str(v) for k, v in im.info.items() if isinstance(v, str) and k != XMP_PNG_KEY}
        raw = im.getexif().get_ifd(ExifTags.IFD.Exif).get(ExifTags.Base.UserComment)
    if not isinstance(raw, bytes) or not raw.startswith(_EXIF_ASCII):
        return {}
    found = json.loads(raw[len(_EXIF_ASCII) :].decode("ascii"))
    return {str(k): str(v) for k, v in found.items()}


def read_source_type(data: bytes) -> str | None:
    """The IPTC digital source type an image's XMP declares (PNG, JPEG, WebP), None without one."""
    with Image.open(io.BytesIO(data)) as im:
        xmp = im.info.get("xmp") or im.info.get(XMP_PNG_KEY)
    if isinstance(xmp, str):
        xmp = xmp.encode("utf-8")
    found = _SOURCE_TYPE.search(xmp) if isinstance(xmp, bytes) else None
    return found.group(1).decode("utf-8") if found else None


def declared_size(data: bytes) -> tuple[str, int, int] | None:
    """The (format, width, height) a PNG, JPEG or WebP header declares, read from the bytes alone
    (no Pillow, no pixels); None when the header cannot be read (Pillow then judges the file)."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        if len(data) >= 24 and data[12:16] == b"IHDR":
            w, h = struct.unpack(">II", data[16:24])
            return "PNG", w, h
        return None
    if data.startswith(b"\xff\xd8"):
        return _jpeg_size(data)
    if len(data) >= 30 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        chunk = data[12:16]
        if chunk == b"VP8X":  # extended: 24-bit canvas width-1 and height-1
            w = int.from_bytes(data[24:27], "little") + 1
            h = int.from_bytes(data[27:30], "little") + 1
            return "WEBP", w, h
        if chunk == b"VP8 " and data[23:26] == b"\x9d\x01\x2a":  # lossy: 14-bit sizes after the start code
            w, h = struct.unpack("<HH", data[26:30])
            return "WEBP", w & 0x3FFF, h & 0x3FFF
        if chunk == b"VP8L" and data[20] == 0x2F:  # lossless: 14-bit width-1, height-1
            bits = int.from_bytes(data[21:25], "little")
            return "WEBP", (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    return None


# JPEG start-of-frame markers (baseline, progressive, lossless, arithmetic...): not DHT (C4), JPG (C8),
# DAC (CC).
_JPEG_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})


def _jpeg_size(data: bytes) -> tuple[str, int, int] | None:
    """Walk the JPEG segments to the first start-of-frame; None if the stream ends or is odd first."""
    i, n = 2, len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # standalone markers
            i += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image, or scan data before any frame header
            return None
        (length,) = struct.unpack(">H", data[i + 2 : i + 4])
        if marker in _JPEG_SOF:
            if i + 9 > n or length < 7:
                return None
            h, w = struct.unpack(">HH", data[i + 5 : i + 9])
            return "JPEG", w, h
        if length < 2:
            return None
        i += 2 + length
    return None


def _check_declared(fmt: str, w: int, h: int, field: str) -> None:
    if w <= 0 or h <= 0:
        raise ValidationFailed.for_field(field, f"{fmt} image declares {w}x{h} pixels; both must be positive")
    if w > MAX_INPUT_SIDE or h > MAX_INPUT_SIDE or w * h > MAX_INPUT_PIXELS:
        raise ValidationFailed.for_field(
            field,
            f"{fmt} image declares {w}x{h} pixels; at most {MAX_INPUT_PIXELS} pixels "
            f"and {MAX_INPUT_SIDE} per side",
        )


def _normalize(image: PILImage) -> PILImage:
    """An RGB, RGBA, L or LA copy of the decoded frame, with no metadata (EXIF, ICC, XMP, text)."""
    try:
        image = ImageOps.exif_transpose(image)  # keep the picture upright once the EXIF is gone
    except Exception:
        log.debug("unreadable EXIF orientation ignored", exc_info=True)
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N"):  # 16-bit grayscale: scale, don't clip
        image = image.convert("I").point(lambda v: v / 256).convert("L")
    elif image.mode not in ("RGB", "RGBA", "L", "LA"):
        alpha = "A" in image.getbands() or "a" in image.getbands() or "transparency" in image.info
        image = image.convert("RGBA" if alpha else "RGB")
    else:
        image = image.copy()
    image.info = {}
    return image


def decode_upload(data: bytes, field: str = "image") -> tuple[PILImage, str]:
    """Decode client-supplied bytes with limits. Returns the image and its mime type.

    - The declared size is read from the header first (`declared_size`, no Pillow) and checked against
      MAX_INPUT_PIXELS / MAX_INPUT_SIDE, so a decompression bomb is refused before any pixel is decoded;
      Pillow's declared size is checked again after `Image.open` (header only), before `load()`.
    - Only PNG, JPEG and WebP parsers are tried. Animated PNG/WebP: the first frame is used.
    - Fully loaded (truncated files fail here, not in a worker); every exception Pillow raises on bad
      input becomes a ValidationFailed (400).
    - The result is RGB, RGBA, L or LA, turned upright by its EXIF orientation, with all metadata
      (EXIF, ICC profile, XMP, text chunks) dropped.
    """
    declared = declared_size(data)
    if declared is not None:
        _check_declared(*declared, field)
    try:
        with Image.open(io.BytesIO(data), formats=list(ALLOWED_INPUT_FORMATS)) as probe:
            fmt = probe.format or ""
            if fmt not in ALLOWED_INPUT_FORMATS:
                raise ValidationFailed.for_field(
                    field, f"unsupported image format {fmt or 'unknown'}; allowed: PNG, JPEG, WebP"
                )
            _check_declared(fmt, *probe.size, field)
            probe.load()
            image = _normalize(probe)
    except ValidationFailed:
        raise
    except Image.DecompressionBombError as e:
        raise ValidationFailed.for_field(field, f"image is too large to decode ({e})") from e
    except UnidentifiedImageError as e:
        raise ValidationFailed.for_field(field, "not a PNG, JPEG or WebP image") from e
    except Exception as e:  # Pillow raises OSError, SyntaxError, ValueError, struct.error, EOFError, ...
        raise ValidationFailed.for_field(field, f"not a readable image ({type(e).__name__})") from e
    return image, ALLOWED_INPUT_FORMATS[fmt]


def to_png(image: PILImage) -> bytes:
    """A decoded client image re-encoded as PNG (its metadata already dropped by decode_upload)."""
    if image.mode not in ("RGB", "RGBA", "L", "LA"):
        image = image.convert("RGBA" if "A" in image.getbands() else "RGB")
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()


def mask_from_transparency(mask: PILImage, size: tuple[int, int], field: str = "mask") -> PILImage:
    """OpenAI's mask (fully transparent pixels = the area to edit) as Easel's: "L", white = repaint.
    It must have an alpha channel and the source image's dimensions."""
    if "A" not in mask.getbands() and "transparency" not in mask.info:
        raise ValidationFailed.for_field(
            field, "must be a PNG with an alpha channel (fully transparent pixels mark the area to edit)"
        )
    if mask.size != size:
        raise ValidationFailed.for_field(
            field, f"must have the image's dimensions ({size[0]}x{size[1]}), got {mask.width}x{mask.height}"
        )
    alpha = mask.convert("RGBA").getchannel("A")
    return alpha.point(lambda a: 255 if a == 0 else 0).convert("L")
