"""The issue's reference point, "a quick aiohttp streaming proxy": an aiohttp server relaying every request to one
upstream through an aiohttp ClientSession, bodies streamed both ways. Not the product; the benchmark runs it
beside the real proxy so that the two are compared on the same machine, backend and load.

`python -m bench.reference_aiohttp_proxy --listen 127.0.0.1:PORT --upstream http://127.0.0.1:PORT`
"""
from __future__ import annotations

import argparse

import aiohttp
from aiohttp import web

from autostart.forwarding import HOP_BY_HOP

# Not relayed: hop-by-hop headers, and the framing and Host that aiohttp sets for each side itself.
NOT_RELAYED = HOP_BY_HOP | {"content-length", "host"}


def make_app(upstream: str) -> web.Application:
    app = web.Application()

    async def session_context(app: web.Application):  # type: ignore[no-untyped-def]
        app["session"] = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), auto_decompress=False)
        yield
        await app["session"].close()

    async def relay(request: web.Request) -> web.StreamResponse:
        headers = {k: v for k, v in request.headers.items() if k.lower() not in NOT_RELAYED}
        async with request.app["session"].request(
            request.method, upstream + request.path_qs, headers=headers,
            data=request.content if request.body_exists else None, allow_redirects=False,
        ) as upstream_response:
            response = web.StreamResponse(status=upstream_response.status, headers={
                k: v for k, v in upstream_response.headers.items() if k.lower() not in NOT_RELAYED})
            await response.prepare(request)
            async for chunk in upstream_response.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
            return response

    app.cleanup_ctx.append(session_context)
    app.router.add_route("*", "/{tail:.*}", relay)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--listen", required=True)
    parser.add_argument("--upstream", required=True)
    args = parser.parse_args()
    host, port = args.listen.rsplit(":", 1)
    web.run_app(make_app(args.upstream.rstrip("/")), host=host, port=int(port), access_log=None, print=None)


if __name__ == "__main__":
    main()
