"""Run a function in two spawned processes that form a gloo process group, and collect what each puts on a queue."""

import socket

import torch.multiprocessing as mp


def run_two_ranks(target, timeout: float = 120) -> list:
    """``target(rank, port, results)`` in ranks 0 and 1 (``port``: a free one for the group); each puts one item on
    ``results``. Returns the two items in the order they arrived."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    procs = [ctx.Process(target=target, args=(rank, port, results)) for rank in range(2)]
    for p in procs:
        p.start()
    items = [results.get(timeout=timeout) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    return items
