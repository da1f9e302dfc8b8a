"""autostart: the asyncio reverse proxy that wakes stopped services on demand."""
