"""The client library for callers that are no worker: the CLI, ``iii watch``, the TUI.

- :mod:`~iii_sdk.client.blocking`: one request and its answer, blocking, with one
  deadline for the whole exchange (the ``iii trigger`` fast path: stdlib only).
- :mod:`~iii_sdk.client.streaming`: asyncio, the event stream and calls over one
  connection (``iii watch``, the TUI).

Both take an address the same way (:mod:`~iii_sdk.client.addresses`), send
``$III_TOKEN`` the same way (:mod:`iii_sdk.tokens`), read replies up to the same limit
(:data:`iii_sdk.limits.DEFAULT_MAX_REPLY`, raised by config ``max_frame_bytes``), and
raise exceptions of the one tree under :class:`iii_sdk.errors.IIIError`.

Imports nothing itself: the fast path loads only the module it needs.
"""
