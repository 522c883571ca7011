"""The model side: workers and backends. The only package that imports torch (lazily, in backends)."""
