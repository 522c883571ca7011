"""Image bytes: a BlobStore (local folder by default) and signed, expiring URLs."""
