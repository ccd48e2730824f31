"""Requests the Flask test client does not make by itself.

    from wsgi import chunked

    client.open(chunked("/predict", png, content_type="image/png"))
"""

import io

from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request


def chunked(path: str, body: bytes, *, content_type: str | None = None, headers: dict | None = None) -> Request:
    """A POST of ``body`` as Gunicorn hands a chunked body to the app: no Content-Length (the test
    client's own requests always have one) and ``wsgi.input_terminated`` marking its end."""
    environ = EnvironBuilder(path=path, method="POST", input_stream=io.BytesIO(body), content_type=content_type,
                             headers={**(headers or {}), "Transfer-Encoding": "chunked"}).get_environ()
    del environ["CONTENT_LENGTH"]
    environ["wsgi.input_terminated"] = True
    return Request(environ)
