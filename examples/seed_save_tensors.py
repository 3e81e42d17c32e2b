"""Guide: "Saving Datasets containing Torch tensors" (保存包含 Torch 张量的数据集): Parquet and NumPy tabs.

The guide writes to ``local:///tmp/tensor``; this script writes under a fresh temporary directory
(same ``local://`` scheme) and reads the files back to show what was saved. Tensors on a GPU must be
moved to the CPU (``tensor.to("cpu")``) before saving.

Run: ``python examples/seed_save_tensors.py``
"""

import os
import tempfile

import numpy as np
import torch

import torchray_loader as rd


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        # --- the guide's code, Parquet tab ---
        tensor = torch.Tensor(1)
        ds = rd.from_items([{"tensor": tensor}])

        ds.write_parquet(f"local://{tmp}/parquet/tensor")
        # --- the guide's code, Numpy tab ---
        tensor = torch.Tensor(1)
        ds = rd.from_items([{"tensor": tensor}])

        ds.write_numpy(f"local://{tmp}/numpy/tensor", column="tensor")
        # ---

        for fmt in ("parquet", "numpy"):
            print(fmt, sorted(os.listdir(f"{tmp}/{fmt}/tensor")))

        back = rd.read_parquet(f"{tmp}/parquet/tensor").take_all()
        print("parquet round trip:", back)
        assert len(back) == 1 and np.asarray(back[0]["tensor"]).shape == (1,)

        arrays = rd.read_numpy(f"{tmp}/numpy/tensor").take_all()
        print("numpy round trip:", arrays)
        assert len(arrays) == 1 and np.asarray(arrays[0]["data"]).shape == (1,)


if __name__ == "__main__":
    main()
