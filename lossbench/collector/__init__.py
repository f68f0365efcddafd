"""The reference collector: counts exactly the events whose complete data it parsed.

Modules, by concept: ``config`` (flags and fixed bounds), ``connection`` (a connection's states and the
interface the shared state uses), ``stats`` (counters), ``state`` (one process's shared state, the group
commit to the ledger, the sweep of deadlines), ``protocol`` (one connection: llhttp parsing, answers,
deadlines), ``routes`` (what each path does), ``responses`` (fixed answers), ``server`` (sockets, event loop,
processes, shutdown).

Why not aiohttp's web server: its request handler drops a request whose bytes arrived in the same
read as the client's RST (``connection_lost`` sets ``force_close`` before the queued message is handled),
and it has no header or body read timeout. Both decide what counts as lost, so the collector is an asyncio
``Protocol`` on llhttp (``httptools``): an event is counted in the ``data_received`` call that completes
it, even if the client's RST follows in the same read. Its ledger line reaches the kernel before its answer
is sent (``lossbench.collector.state``).

Bad input never stops the collector: every request that is not a valid one gets a 4xx (or 5xx) with a
fixed plain-text reason, is counted under ``refused`` in ``/stats`` by the names in ``REFUSALS``, and
closes its connection (requests before it on the same connection keep their answers; nothing after it
is read). Such a close lingers: the collector sends FIN after the answers and drops what still comes
until the client closes, because closing on unread bytes sends an RST that would destroy the answers
in the client's kernel. Nothing from a request is reflected in an answer except an ``Origin`` that is
on the ``allow_origins`` list.

Bounds on what one client can hold (slowloris, slow bodies, clients that never read):

- headers: ``header_timeout`` from the first byte of a request; URL ``max_url`` (414), headers
  ``max_header_bytes`` (431). httptools buffers a header line internally until it ends, so the bytes of an
  unfinished head are counted as they arrive (fed in slices of ``HEAD_SLICE``): at most
  ``max_url + max_header_bytes + 2 * HEAD_SLICE`` bytes of head are ever buffered per connection.
- bodies: ``body_timeout`` from the end of the headers, however slowly the bytes trickle; ``max_body``
  (413); chunked bodies are refused (411), so a body's size is known before it is read.
- idle keep-alive: ``idle_timeout``.
- a client that does not read its answers: reading pauses while the transport's write buffer is full,
  and a connection closed by the collector is aborted if it has not gone ``CLOSE_LINGER`` s later.
- connections: past ``max_connections`` open ones, a new connection gets a 503 (lingering too, so that
  it can be read) and is closed.

A sweeper checks deadlines a few times per shortest timeout instead of arming a timer per request
(``CollectorConfig.sweep_every``).
"""
