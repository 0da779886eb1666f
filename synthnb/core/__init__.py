"""Foundations: experiment files and typed parameters, the artifact store, images, datasets and
their sources, the classifier, the runtime.
"""
