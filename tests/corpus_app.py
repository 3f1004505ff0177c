"""The WSGI app gunicorn serves in the healthy corpus (tests/corpus.py)."""


def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"healthy\n"]
