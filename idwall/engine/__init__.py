"""The proxied request path: a sans-IO HTTP/1.1 engine (``h1``) and the one module that does socket I/O (``io``).

    h1         bytes in, events out; framing rules (RFC 9112) and header hygiene; what the gateway writes
    headers    which header fields the gateway owns, drops or reads (tables, no logic per request)
    websocket  the RFC 6455 handshake checks
    answers    the gateway's own answers (problem+json, redirects) as bytes
    tls        the listener's and the upstreams' TLS contexts
    io         asyncio protocols: the listener, client connections, the upstream pool, splicing, timeouts
"""
