"""Helpers shared by the benchmarks: the machine's measured matmul peak, the FLOPs of a training image, isolated measurements."""
import multiprocessing as mp
import resource
import time

import torch


def matmul_peak(dtype=torch.float32, n: int = 2048, repeats: int = 5, device: str = 'cpu') -> float:
    "Best GFLOP/s of an n×n matmul in `dtype` on `device`: the ceiling a training loop is measured against."
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    _sync(device)
    best = float('inf')
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return 2 * n ** 3 / best / 1e9


def train_flops(model: torch.nn.Module, loss_of, batch: int = 8) -> float:
    """FLOPs of one training image on the actual model: forward and backward of `loss_of(model, batch)` counted by torch's
    `FlopCounterMode` (matmuls and convolutions, 2 FLOPs per multiply-add, as the matmul peak counts them), per image."""
    from torch.utils.flop_counter import FlopCounterMode
    model.train()
    with FlopCounterMode(display=False) as counter: loss_of(model, batch).backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops() / batch


def _sync(device):
    if str(device).startswith('cuda'): torch.cuda.synchronize()


def _child(q, fn, args):
    try: q.put(('ok', fn(*args), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))
    except Exception as e: q.put(('error', repr(e), 0.0))


def isolated(fn, *args):
    "Run `fn(*args)` in a fresh process (no state shared with other measurements); return (result, peak RSS in MiB)."
    ctx = mp.get_context('spawn')
    q = ctx.Queue()
    p = ctx.Process(target=_child, args=(q, fn, args))
    p.start()
    status, result, rss = q.get()
    p.join()
    if status != 'ok': raise RuntimeError(result)
    return result, rss


def side_by_side(k: int, fn, *args) -> list:
    "Run `fn(*args)` in `k` fresh processes at the same time (e.g. one per core); return their results."
    ctx = mp.get_context('spawn')
    q = ctx.Queue()
    procs = [ctx.Process(target=_child, args=(q, fn, args)) for _ in range(k)]
    for p in procs: p.start()
    out = [q.get() for _ in procs]
    for p in procs: p.join()
    if any(s != 'ok' for s, _, _ in out): raise RuntimeError([r for s, r, _ in out if s != 'ok'])
    return [r for _, r, _ in out]
