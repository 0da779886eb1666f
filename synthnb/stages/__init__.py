"""The six stages and their helpers: metrics, review, filtering and the gate; augmentation
policies, style and translation; the arms, the verdict and the statistics of stage 6.
"""
