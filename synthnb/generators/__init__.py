"""The generators of stage 2, one module each, behind the registry (`synthnb.generators.registry`).
"""
