"""PyTorch side: tensor conversion, device transfer, RayStyleLoader, from_torch."""
