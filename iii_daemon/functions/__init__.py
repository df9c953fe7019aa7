"""The daemon's own functions (``engine::*``, ``state::*``, ``stream::*``, ``enqueue``,
queues): each gets the capabilities it needs from the core, never the router. Pure, like
the core."""
