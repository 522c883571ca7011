"""The provenance label (docs/provenance.md): every image Easel makes carries the IPTC digital source type
`trainedAlgorithmicMedia` in XMP, in PNG, JPEG and WebP, readable by Pillow and by plain byte search,
next to the generation parameters (which stay readable); a client's upload is never labelled."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from easel.domain.spec import OutputFormat
from easel.imaging import DIGITAL_SOURCE_TYPE, encode, read_params, read_source_type, to_png


@pytest.mark.parametrize("fmt", list(OutputFormat))
def test_every_format_carries_the_digital_source_type(fmt: OutputFormat) -> None:
    picture = Image.new("RGB", (32, 24), (10, 200, 30))
    labelled = encode(picture, fmt, params={"prompt": "a green field", "seed": "7"})
    assert read_source_type(labelled.data) == DIGITAL_SOURCE_TYPE
    assert DIGITAL_SOURCE_TYPE.encode() in labelled.data  # a plain XMP packet any reader finds
    assert read_params(labelled.data) == {"prompt": "a green field", "seed": "7"}
    with Image.open(io.BytesIO(labelled.data)) as im:
        assert im.size == (32, 24)
    assert encode(picture, fmt, params={"prompt": "a green field", "seed": "7"}).data == labelled.data
    plain = encode(picture, fmt, label=False)
    assert read_source_type(plain.data) is None and DIGITAL_SOURCE_TYPE.encode() not in plain.data


def test_an_upload_is_not_labelled() -> None:
    assert read_source_type(to_png(Image.new("RGB", (8, 8)))) is None


@pytest.mark.parametrize("output_format", ["png", "jpeg", "webp"])
def test_a_generated_image_served_by_the_api_carries_the_label(client: object, output_format: str) -> None:
    r = client.post(  # type: ignore[attr-defined]
        "/api/v1/generations",
        json={"prompt": "a red circle", "size": "64x64", "outputFormat": output_format},
        headers={"Prefer": "wait=60"},
    )
    assert r.status_code in (200, 201) and r.json()["data"]["status"] == "success", r.text
    image_id = r.json()["data"]["outputImageIds"][0]
    body = client.get(f"/api/v1/images/{image_id}").json()["data"]  # type: ignore[attr-defined]
    data = client.get(body["storageUrl"]).content  # type: ignore[attr-defined]
    assert read_source_type(data) == DIGITAL_SOURCE_TYPE
