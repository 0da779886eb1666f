"""Helpers shared by the benchmarks: the machine's measured matmul peak, the FLOPs of a model, isolated measurements."""
import multiprocessing as mp
import resource
import time

import torch


def matmul_peak(dtype=torch.float32, n: int = 2048, repeats: int = 5, device: str = 'cpu') -> float:
    "Best GFLOP/s of an n×n matmul in `dtype` on `device`: the ceiling a training loop is measured against."
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    a @ b; _sync(device)
    best = float('inf')
    for _ in range(repeats):
        t0 = time.perf_counter(); a @ b; _sync(device); best = min(best, time.perf_counter() - t0)
    return 2 * n ** 3 / best / 1e9


def forward_flops(model: torch.nn.Module, *inputs, **kwargs) -> float:
    "FLOPs of one forward pass, counting the multiply-adds of convolutions and linear layers (2 FLOPs each)."
    total = []
    def conv(m, i, o): total.append(2 * o.numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1])
    def lin(m, i, o): total.append(2 * o.numel() * m.in_features)
    hooks = [m.register_forward_hook(conv if isinstance(m, torch.nn.Conv2d) else lin)
             for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    with torch.no_grad(): model(*inputs, **kwargs)
    for h in hooks: h.remove()
    return float(sum(total))


def _sync(device):
    if str(device).startswith('cuda'): torch.cuda.synchronize()


def _child(q, fn, args):
    try: q.put(('ok', fn(*args), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))
    except Exception as e: q.put(('error', repr(e), 0.0))


def isolated(fn, *args):
    "Run `fn(*args)` in a fresh process (no state shared with other measurements); return (result, peak RSS in MiB)."
    ctx = mp.get_context('spawn'); q = ctx.Queue(); p = ctx.Process(target=_child, args=(q, fn, args)); p.start()
    status, result, rss = q.get(); p.join()
    if status != 'ok': raise RuntimeError(result)
    return result, rss
