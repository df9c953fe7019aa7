"""The I/O around the core: the asyncio hub, the Unix socket, WebSocket and HTTP
listeners and their access check, the channel relay, the HTTP caller, the SQLite store
and its writer thread."""
