"""A tabular pipeline on parquet: read (column projection + filter pushdown), preprocess, train, predict, write.

1. Write a synthetic dataset as 8 parquet files: 8 feature columns, a binary ``label`` that depends
   on them, and a ``split`` column.
2. ``read_parquet`` only the needed columns and only ``split == "train"`` rows (pushed into the
   parquet reader), standardise the features in ``map_batches``, hold out 20%.
3. Train logistic regression with ``iter_torch_batches`` (local shuffle buffer, reseeded per epoch).
4. Score the held-out rows with a callable class on an actor pool and ``write_parquet`` them.

Run: ``python examples/parquet_pipeline.py``
"""

import os
import tempfile
from typing import Dict  # noqa: UP035 - the guide's spelling

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
from torch import nn

import torchray_loader as rd

FEATURES = [f"f{i}" for i in range(8)]


def write_dataset(path: str, n: int = 4000, num_files: int = 8) -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, len(FEATURES))) * 3 + 1
    w = np.linspace(-1, 1, len(FEATURES))
    label = ((x - 1) @ w + rng.standard_normal(n) * 0.5 > 0).astype(np.int64)
    split = np.where(rng.random(n) < 0.9, "train", "holdout")
    os.makedirs(path, exist_ok=True)
    for k, rows in enumerate(np.array_split(np.arange(n), num_files)):
        cols = {name: x[rows, i] for i, name in enumerate(FEATURES)}
        table = pa.table({"id": rows, **cols, "label": label[rows], "split": split[rows]})
        pq.write_table(table, os.path.join(path, f"part-{k}.parquet"))


def standardize(batch: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:  # noqa: UP006
    # Features are N(1, 3^2) by construction; a real pipeline would compute these from the data.
    out = {name: (batch[name] - 1.0) / 3.0 for name in FEATURES}
    out["label"] = batch["label"]
    out["id"] = batch["id"]
    return out


class Scorer:
    """Built once per actor; scores whole batches."""

    def __init__(self, state_dict: Dict[str, torch.Tensor]):  # noqa: UP006
        self.model = nn.Linear(len(FEATURES), 1)
        self.model.load_state_dict(state_dict)
        self.model.eval()

    def __call__(self, batch: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:  # noqa: UP006
        x = torch.as_tensor(np.stack([batch[f] for f in FEATURES], axis=1), dtype=torch.float32)
        with torch.inference_mode():
            prob = torch.sigmoid(self.model(x)).squeeze(1).numpy()
        return {"id": batch["id"], "label": batch["label"], "prob": prob}


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = os.path.join(tmp, "data")
        write_dataset(data_dir)

        ds = rd.read_parquet(
            data_dir, columns=["id", *FEATURES, "label", "split"], filter=pc.field("split") == "train"
        )
        ds = ds.drop_columns(["split"]).map_batches(standardize, batch_size=512)
        train, test = ds.train_test_split(test_size=0.2, shuffle=True, seed=0)
        print(f"train rows: {train.count()}, test rows: {test.count()}")
        print(train.schema())

        torch.manual_seed(0)
        model = nn.Linear(len(FEATURES), 1)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
        loss_fn = nn.BCEWithLogitsLoss()
        for epoch in range(3):
            total, seen = 0.0, 0
            batches = train.iter_torch_batches(
                batch_size=128, dtypes=torch.float32, local_shuffle_buffer_size=1024, local_shuffle_seed=epoch
            )
            for batch in batches:
                x = torch.stack([batch[f] for f in FEATURES], dim=1)
                loss = loss_fn(model(x).squeeze(1), batch["label"])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                total += loss.item() * len(x)
                seen += len(x)
            print(f"epoch {epoch}: mean loss {total / seen:.4f} over {seen} rows")

        scored = test.map_batches(
            Scorer, fn_constructor_args=(model.state_dict(),), compute=rd.ActorPoolStrategy(size=2), batch_size=256
        )
        out_dir = os.path.join(tmp, "predictions")
        scored.write_parquet(out_dir)

        predictions = rd.read_parquet(out_dir)
        result = predictions.take_batch(predictions.count())
        accuracy = float(np.mean((result["prob"] > 0.5) == (result["label"] == 1)))
        print(f"wrote {len(os.listdir(out_dir))} files, {len(result['id'])} predictions; held-out accuracy {accuracy:.3f}")
        assert len(result["id"]) == test.count()
        assert accuracy > 0.8, accuracy


if __name__ == "__main__":
    main()
