"""The page a browser gets while a non-blocking service starts: it refreshes itself until the service answers."""
from __future__ import annotations

from html import escape

REFRESH_SECONDS = 3


def starting_page(service: str) -> str:
    name = escape(service)
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="refresh" content="{REFRESH_SECONDS}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Starting {name}…</title>
<style>
body {{ font-family: system-ui, sans-serif; display: grid; place-items: center; min-height: 90vh; color: #222; }}
.spinner {{ width: 2.5rem; height: 2.5rem; border: .3rem solid #ddd; border-top-color: #2a6; border-radius: 50%;
           animation: spin 1s linear infinite; margin: 0 auto 1rem; }}
@keyframes spin {{ to {{ transform: rotate(360deg); }} }}
</style>
</head>
<body>
<main>
<div class="spinner" aria-hidden="true"></div>
<h1>Starting {name}…</h1>
<p>The service was asleep and is starting now. This page reloads every {REFRESH_SECONDS} seconds.</p>
</main>
</body>
</html>
"""
