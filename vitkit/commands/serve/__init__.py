"""``vitkit serve``: ``cli``, ``server`` (the FastAPI app and its routes), ``batching`` (dynamic batches),
``page`` (the web page)."""
