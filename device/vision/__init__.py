"""Inference: runtime (interpreters, Edge TPU delegate), detectors, embedder."""
