"""Benchmarks for torchray_loader against torch's DataLoader and Ray Data.

Run ``python -m benchmarks run [--quick]`` from the repository root; see ``benchmarks/README.md``.
"""
