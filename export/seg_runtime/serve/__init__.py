"""``seg-run serve``: the per-case stages behind an HTTP API, with models loaded once and kept warm.

- :mod:`.settings`: the server's options, checked before anything starts;
- :mod:`.security`: bearer tokens, ``Host``/``Origin`` checks, the body cap;
- :mod:`.uploads`: a multipart body streamed into the job store, hostile zips refused;
- :mod:`.models`: the served bundles, their backends and pipelines;
- :mod:`.admission`, :mod:`.workers`: the bounded queue, the memory budget, the worker pool;
- :mod:`.jobs`: jobs in the one on-disk store of accepted work;
- :mod:`.results`, :mod:`.viewer`: result files, formats, the web page's volumes;
- :mod:`.app`: the FastAPI application; :mod:`.server` runs it on uvicorn, :mod:`.ray_serve` on Ray Serve.

FastAPI, uvicorn and python-multipart are the ``serve`` extra (``pip install "seg-runtime[serve]"``);
nothing here is imported by ``seg-run predict``.
"""

from __future__ import annotations
