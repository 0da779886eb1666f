"""What runs the stages: the runner and the guarded papermill child, sweeps on Dask, replicate
chains and the evidence report, the feedback loop, the command line.
"""
