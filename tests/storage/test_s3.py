"""S3 object storage against a real S3 server: a throwaway Ceph RADOS Gateway (scripts/ceph-rgw.sh).

The session fixtures `rgw` and `bucket` live in tests/conftest.py (helpers in tests/s3_support.py): they
start the gateway (installing Debian's Ceph packages on a fresh machine; root or passwordless sudo) or
reuse a running one, and stop it afterwards if they started it (EASEL_TEST_KEEP_RGW=1 keeps it for
faster re-runs). When Ceph cannot be installed or started the S3 tests FAIL; EASEL_TEST_SKIP_S3=1 skips
them knowingly. The BlobStore contract runs on the local folder and on S3 alike.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from easel.settings import Settings
from easel.storage.base import BlobNotFound, BlobStore
from easel.storage.factory import make_blob_store
from easel.storage.keys import generated_image_key as image_key
from easel.storage.local import LocalBlobStore
from helpers import open_image, png_bytes
from s3_support import s3_settings
from support import key_headers, write_catalog

# The first S3 test may install Ceph from apt (about a minute) and start it (about 15 s).
pytestmark = pytest.mark.timeout(1800)


def s3_store(rgw: dict[str, str], bucket: str, tmp_path: Path, **kw: Any) -> Any:
    """An S3BlobStore under a prefix of its own in the session's bucket."""
    url = f"s3://{bucket}/t-{uuid.uuid4().hex[:10]}/"
    return make_blob_store(Settings(data_dir=tmp_path, storage_url=url, **s3_settings(rgw) | kw))


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> BlobStore:
    if request.param == "local":
        return make_blob_store(Settings(data_dir=tmp_path))
    return s3_store(request.getfixturevalue("rgw"), request.getfixturevalue("bucket"), tmp_path)  # type: ignore[no-any-return]


# --- the BlobStore contract, on both stores ---------------------------------------------------------


def test_put_get_and_overwrite_the_same_key(store: BlobStore) -> None:
    store.put("p/g/0.png", b"first", "image/png")
    assert store.get("p/g/0.png") == b"first"
    store.put("p/g/0.png", b"second, longer", "image/png")
    assert store.get("p/g/0.png") == b"second, longer"
    assert store.keys() == ["p/g/0.png"]


def test_delete_and_exists(store: BlobStore) -> None:
    store.put("p/g/0.webp", b"x" * 1000, "image/webp")
    assert store.exists("p/g/0.webp")
    assert not store.exists("p/g/1.webp")
    store.delete("p/g/0.webp")
    assert not store.exists("p/g/0.webp")
    store.delete("p/g/0.webp")  # deleting a missing key is fine
    assert store.keys() == []


def test_keys_by_prefix(store: BlobStore) -> None:
    for key in ["p1/g1/0.png", "p1/g1/1.png", "p1/g2/0.png", "p2/g1/0.png"]:
        store.put(key, key.encode(), "image/png")
    assert store.keys() == ["p1/g1/0.png", "p1/g1/1.png", "p1/g2/0.png", "p2/g1/0.png"]
    assert store.keys("p1/") == ["p1/g1/0.png", "p1/g1/1.png", "p1/g2/0.png"]
    assert store.keys("p1/g1/") == ["p1/g1/0.png", "p1/g1/1.png"]
    assert store.keys("p3/") == []


def test_missing_key_is_blob_not_found(store: BlobStore) -> None:
    with pytest.raises(BlobNotFound):
        store.get("p/none/0.png")


@pytest.mark.parametrize("key", ["../escape.png", "/abs.png", "a/../../b.png", ""])
def test_keys_outside_the_store_are_refused(store: BlobStore, key: str) -> None:
    with pytest.raises(ValueError):
        store.put(key, b"x", "image/png")


def test_public_url_local_none_s3_presigned(store: BlobStore) -> None:
    store.put("p/g/0.png", b"x", "image/png")
    url = store.public_url("p/g/0.png", 60)
    if isinstance(store, LocalBlobStore):
        assert url is None
    else:
        assert url is not None and "X-Amz-Signature=" in url


# --- S3 only ------------------------------------------------------------------------------------------


def test_prefixes_isolate_stores_in_one_bucket(rgw: dict[str, str], bucket: str, tmp_path: Path) -> None:
    a, b = s3_store(rgw, bucket, tmp_path), s3_store(rgw, bucket, tmp_path)
    a.put("p/g/0.png", b"a", "image/png")
    b.put("p/g/0.png", b"b", "image/png")
    assert (a.get("p/g/0.png"), b.get("p/g/0.png")) == (b"a", b"b")
    assert a.keys() == b.keys() == ["p/g/0.png"]
    a.delete("p/g/0.png")
    assert b.exists("p/g/0.png")


def test_presigned_url_downloads_then_expires(rgw: dict[str, str], bucket: str, tmp_path: Path) -> None:
    store = s3_store(rgw, bucket, tmp_path)
    store.put("p/g/0.png", b"\x89PNG not really", "image/png")
    r = httpx.get(store.presigned_url("p/g/0.png", 300))
    assert r.status_code == 200 and r.content == b"\x89PNG not really"
    assert r.headers["content-type"] == "image/png"

    short = store.presigned_url("p/g/0.png", 1)
    time.sleep(2.2)
    assert httpx.get(short).status_code == 403
    # A changed signature is refused too.
    tampered = r.request.url.copy_set_param("X-Amz-Expires", "600")
    assert httpx.get(tampered).status_code == 403


def test_presign_off_means_no_public_url(rgw: dict[str, str], bucket: str, tmp_path: Path) -> None:
    store = s3_store(rgw, bucket, tmp_path, s3_presign=False)
    store.put("p/g/0.png", b"x", "image/png")
    assert store.public_url("p/g/0.png", 60) is None
    assert store.presigned_url("p/g/0.png", 60).startswith(rgw["EASEL_S3_ENDPOINT_URL"])


def test_factory_and_url_parsing(tmp_path: Path) -> None:
    from easel.storage.s3 import S3BlobStore, S3Location

    assert isinstance(make_blob_store(Settings(data_dir=tmp_path)), LocalBlobStore)
    local = make_blob_store(Settings(data_dir=tmp_path, storage_url=f"file://{tmp_path / 'elsewhere'}"))
    assert isinstance(local, LocalBlobStore) and local.root == (tmp_path / "elsewhere").resolve()
    s3 = make_blob_store(
        Settings(data_dir=tmp_path, storage_url="s3://bkt/a/b/", s3_endpoint_url="http://127.0.0.1:1")
    )
    assert isinstance(s3, S3BlobStore) and (s3.bucket, s3.prefix) == ("bkt", "a/b/")
    assert S3Location.parse("s3://bkt") == S3Location("bkt", "")
    for bad in ("s3:///nobucket", "http://bkt/x", "s3://bkt/x?y=1"):
        with pytest.raises(ValueError):
            S3Location.parse(bad)
    with pytest.raises(ValueError):
        make_blob_store(Settings(data_dir=tmp_path, storage_url="gs://bkt"))


# --- end to end: a worker's images land in the bucket; the API's links download them ---------------


@pytest.mark.slow
def test_generation_images_in_the_bucket_and_links_download(
    rgw: dict[str, str], bucket: str, database_url: str, tiny_model_dir: Path, tmp_path: Path
) -> None:
    import boto3
    from botocore.config import Config
    from fastapi.testclient import TestClient

    from easel.app import create_app
    from easel.runtime import Runtime

    prefix = f"e2e-{uuid.uuid4().hex[:10]}"
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        catalog=write_catalog(tmp_path / "catalog.toml", tiny_model_dir),
        secret_key="test-secret",
        lease_seconds=5,
        storage_url=f"s3://{bucket}/{prefix}",
        **s3_settings(rgw),
    )
    rt = Runtime.build(settings)
    try:
        key, _ = rt.keys.create(rt.default_project_id, "s3 test", ["admin"], rate_limit_per_hour=0)
        with TestClient(create_app(runtime=rt, with_worker=False), headers=key_headers(key)) as api:
            r = api.post(
                "/api/v1/generations", json={"prompt": "a red circle", "size": "64x64", "seed": 5, "n": 2}
            )
            assert r.status_code == 201, r.text
            gid = r.json()["data"]["id"]
            assert rt.make_worker().run_once()
            done = api.get(f"/api/v1/generations/{gid}").json()["data"]
            assert done["status"] == "success"

            # The bytes are in the bucket under the prefix, at the deterministic keys.
            raw = boto3.client(
                "s3",
                endpoint_url=rgw["EASEL_S3_ENDPOINT_URL"],
                region_name=rgw["EASEL_S3_REGION"],
                aws_access_key_id=rgw["EASEL_S3_ACCESS_KEY_ID"],
                aws_secret_access_key=rgw["EASEL_S3_SECRET_ACCESS_KEY"],
                config=Config(s3={"addressing_style": "path"}),
            )
            listed = raw.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/")
            expected = [f"{prefix}/{image_key(rt.default_project_id, gid, i, 'png')}" for i in range(2)]
            assert sorted(o["Key"] for o in listed["Contents"]) == expected

            # The API's links are presigned S3 URLs that download the PNG with a plain HTTP client.
            downloaded = []
            for img in done["outputImages"]:
                url = img["storageUrl"]
                assert (
                    url.startswith(f"{rgw['EASEL_S3_ENDPOINT_URL']}/{bucket}/{prefix}/") and "X-Amz-" in url
                )
                got = httpx.get(url)
                assert got.status_code == 200 and got.headers["content-type"] == "image/png"
                assert len(got.content) == img["fileSize"]
                pic = open_image(got.content)
                assert pic.format == "PNG" and pic.size == (64, 64)
                downloaded.append(got.content)
            assert downloaded[0] != downloaded[1]
            img_id = done["outputImages"][0]["id"]
            one = api.get(f"/api/v1/images/{img_id}").json()["data"]
            assert one["storageUrl"].startswith(rgw["EASEL_S3_ENDPOINT_URL"])

            # Presigning off: Easel's own signed link, served from the bucket by the native route.
            rt.blobs.presign = False  # type: ignore[attr-defined]
            link = api.get(f"/api/v1/images/{img_id}").json()["data"]["storageUrl"]
            assert f"/api/v1/images/{img_id}/file?" in link
            served = api.get(link)
            assert served.status_code == 200 and served.content == downloaded[0]

            # The stored object carries its content type (what S3 answers a presigned GET with).
            assert raw.head_object(Bucket=bucket, Key=expected[0])["ContentType"] == "image/png"

            # An upload goes to the bucket too, and its link downloads it.
            rt.blobs.presign = True  # type: ignore[attr-defined]
            up = api.post("/api/v1/images", files={"file": ("red.png", png_bytes((40, 30)), "image/png")})
            assert up.status_code == 201, up.text
            up_url = up.json()["data"]["storageUrl"]
            assert up_url.startswith(f"{rgw['EASEL_S3_ENDPOINT_URL']}/{bucket}/{prefix}/")
            assert open_image(httpx.get(up_url).content).size == (40, 30)
            uploads = raw.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/{rt.default_project_id}/uploads/")
            assert len(uploads["Contents"]) == 1
    finally:
        rt.close()
