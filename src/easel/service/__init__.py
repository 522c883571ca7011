"""Application services: what the API does, independent of any dialect's wire shape."""
