"""The default readiness probe: TCP connect to the service's port, then `GET healthPath` answering 2xx."""
from __future__ import annotations

import asyncio

PROBE_TIMEOUT = 2.0


async def port_open(host: str, port: int, timeout: float = PROBE_TIMEOUT) -> bool:
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except (OSError, asyncio.TimeoutError):
        return False
    writer.close()
    return True


async def http_healthy(host: str, port: int, path: str, timeout: float = PROBE_TIMEOUT) -> bool:
    """True when the port accepts a connection and `GET path` answers with a 2xx status line."""
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, port)
            try:
                host_header = f"[{host}]" if ":" in host else host
                writer.write(
                    f"GET {path} HTTP/1.1\r\nHost: {host_header}:{port}\r\nUser-Agent: autostart-probe\r\n"
                    "Connection: close\r\n\r\n".encode("latin-1")
                )
                await writer.drain()
                status_line = await reader.readline()
            finally:
                writer.close()
    except (OSError, asyncio.TimeoutError, UnicodeError):
        return False
    parts = status_line.split(b" ", 2)
    return len(parts) >= 2 and parts[0].startswith(b"HTTP/") and parts[1][:1] == b"2" and len(parts[1]) == 3
