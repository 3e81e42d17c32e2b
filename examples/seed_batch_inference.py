"""Guide: "Batch inference with PyTorch" (使用 PyTorch 进行批量推理).

A callable class is constructed once per actor (``ActorPoolStrategy(size=2)``: two long-lived
worker processes) and then called on many batches. The guide's output (mocked there, since the
weights are random) looks like ``{'output': array([0.5590901], dtype=float32)}``.

Run: ``python examples/seed_batch_inference.py``
"""

from typing import Dict  # noqa: UP035 - the guide's spelling

import numpy as np
import torch
import torch.nn as nn

import torchray_loader as rd


# Step 2: Define a Predictor class for inference.
# Use a class to initialize the model just once in `__init__`
# and re-use it for inference across multiple batches.
class TorchPredictor:
    def __init__(self):
        # Load a dummy neural network.
        # Set `self.model` to your pre-trained PyTorch model.
        self.model = nn.Sequential(
            nn.Linear(in_features=100, out_features=1),
            nn.Sigmoid(),
        )
        self.model.eval()

    # Logic for inference on 1 batch of data.
    def __call__(self, batch: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:  # noqa: UP006
        tensor = torch.as_tensor(batch["data"], dtype=torch.float32)
        with torch.inference_mode():
            # Get the predictions from the input batch.
            return {"output": self.model(tensor).numpy()}


def main() -> None:
    # Step 1: Create a Ray Dataset from in-memory Numpy arrays.
    # You can also create a Ray Dataset from many other sources and file
    # formats.
    ds = rd.from_numpy(np.ones((1, 100)))

    # Use 2 parallel actors for inference. Each actor predicts on a
    # different partition of data.
    scale = rd.ActorPoolStrategy(size=2)
    # Step 3: Map the Predictor over the Dataset to get predictions.
    predictions = ds.map_batches(TorchPredictor, compute=scale)
    # Step 4: Show one prediction output.
    predictions.show(limit=1)

    # Beyond the guide: more rows than one batch, so both actors get work; order is kept.
    many = rd.from_numpy(np.ones((64, 100), dtype=np.float32)).map_batches(
        TorchPredictor, compute=scale, batch_size=8
    )
    out = many.take_batch(64)["output"]
    assert out.shape == (64, 1) and out.dtype == np.float32
    assert np.all((out > 0) & (out < 1))


if __name__ == "__main__":
    main()
