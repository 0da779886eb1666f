"""Replicate chains in parallel: the wall time of one small protocol on 1 and on 2 LocalCluster workers.

    python bench/protocol.py [--chains 2] [--curve-chains 2] [--configs 1x1,1x2,2x1]

The protocol is the healthcare smoke experiment with the cheap generator and a short stage 6 (the tests' light
settings): `--chains` replicate chains (all six stages each) and `--curve-chains` learning-curve chains at 5 real
images per class. Each configuration `WxT` (W workers, T threads per chain) runs it from scratch (stage cache off, a
fresh runs folder); the figures are wall seconds and the speed-up against the first configuration, measured in the
same run on this machine.
"""
import argparse, os, tempfile, time

os.environ['SYNTHNB_STAGE_CACHE'] = ''  # every configuration computes every stage
os.environ.setdefault('TQDM_DISABLE', '1')
import torch

from synthnb.core.config import load_experiment
from synthnb.core.runtime import bf16_supported
from synthnb.orchestration.protocol_run import run_protocol

LIGHT = ['generation.generators=[simulation]', 'integration.strategies=[mix]', 'training.steps=15', 'training.seeds=[0]',
         'training.robustness=false', 'training.detector_steps=0', 'training.arms=[real_only, synthetic, ceiling]']


def timed(workers: int, threads: int, chains: int, curve_chains: int) -> float:
    "Wall seconds of the protocol from scratch with `workers` LocalCluster workers of `threads` threads."
    exp = load_experiment('experiments/healthcare.yaml', [*LIGHT, 'exp_id=bench', f'protocol.chains={chains}',
                                                          'protocol.curve=[5]', f'protocol.curve_chains={curve_chains}'])
    with tempfile.TemporaryDirectory() as runs:
        t0 = time.perf_counter()
        rec = run_protocol(exp, runs, n_workers=workers, threads=threads, report=False, log=lambda m: None)
        secs = time.perf_counter() - t0
    bad = [k for k, v in rec['chains'].items() if v['status'] != 'complete']
    if bad: raise RuntimeError(f"chains did not complete: {bad}")
    return secs


def main(chains=2, curve_chains=2, configs='1x1,1x2,2x1'):
    runs = [tuple(int(x) for x in c.split('x')) for c in configs.split(',')]
    print(f"{chains} replicate + {curve_chains} learning-curve chains; {os.cpu_count()} cores; torch {torch.__version__}, "
          f"CPU capability {torch.backends.cpu.get_cpu_capability()}, native bf16 {bf16_supported('cpu')}")
    base = None
    for w, t in runs:
        secs = timed(w, t, chains, curve_chains)
        base = base or secs
        print(f"{w} worker(s) × {t} thread(s): {secs:6.1f} s wall, speed-up {base / secs:.2f}× against {runs[0][0]}×{runs[0][1]}",
              flush=True)


if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--chains', type=int, default=2)
    p.add_argument('--curve-chains', type=int, default=2)
    p.add_argument('--configs', default='1x1,1x2,2x1')
    a = p.parse_args()
    main(a.chains, a.curve_chains, a.configs)
