"""Guide: "Custom PyTorch Datasets" (自定义 PyTorch 数据集): the same image pipeline twice.

First a PyTorch ``Dataset`` whose ``__getitem__`` reads a file, takes the label from the file name
(``17.jpg`` -> 17) and applies torchvision transforms; then the Ray Data way: ``read_images`` plus
``map`` calls. The guide reads ``s3://anonymous@ray-example-data/batoidea/JPEGImages`` (with boto3
in the PyTorch version); here both read a generated local folder of JPEGs named ``0.jpg``,
``1.jpg``, ... The script then checks that both give the same labels and (nearly) the same tensors:
two JPEG decoders may differ by a rounding step in a few pixels.

Run: ``python examples/seed_custom_dataset_migration.py``
"""

import glob
import os
import tempfile

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

import torchray_loader as rd
from torchray_loader.testing import make_image_folder


# --- the guide's PyTorch Dataset (local files in place of boto3/S3) ---
class ImageDataset(Dataset):
    def __init__(self, dir_path: str):
        self.files = sorted(glob.glob(os.path.join(dir_path, "*.jpg")))

        self.transform = transforms.Compose([
            transforms.ToTensor(),
            transforms.Resize((128, 128)),
            transforms.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
        ])

    def __len__(self):
        return len(self.files)

    def __getitem__(self, idx):
        img_name = self.files[idx]

        # Infer the label from the file name.
        last_slash_idx = img_name.rfind("/")
        dot_idx = img_name.rfind(".")
        label = int(img_name[last_slash_idx+1:dot_idx])

        image = Image.open(img_name)

        # Preprocess the image.
        image = self.transform(image)

        return image, label


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        image_dir = str(make_image_folder(tmp, n=12, size=(32, 32), classes=None))

        dataset = ImageDataset(dir_path=image_dir)

        # --- the guide's Ray Data version ---
        ds = rd.read_images(image_dir, include_paths=True)

        # Extract the label from the file path.
        def extract_label(row: dict):
            filepath = row["path"]
            last_slash_idx = filepath.rfind("/")
            dot_idx = filepath.rfind('.')
            label = int(filepath[last_slash_idx+1:dot_idx])
            row["label"] = label
            return row

        transform = transforms.Compose([
                        transforms.ToTensor(),
                        transforms.Resize((128, 128)),
                        transforms.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
                    ])

        # Preprocess the images.
        def transform_image(row: dict):
            row["transformed_image"] = transform(row["image"])
            return row

        # Map the transformations over the dataset.
        ds = ds.map(extract_label).map(transform_image)
        # ---

        print(ds.schema())

        # The DataLoader over the torch Dataset and iter_torch_batches over the Ray Data pipeline.
        torch_images = {}
        for images, labels in DataLoader(dataset, batch_size=4):
            torch_images.update(zip(labels.tolist(), images, strict=True))
        ray_images = {}
        for batch in ds.iter_torch_batches(batch_size=4):
            ray_images.update(zip(batch["label"].tolist(), batch["transformed_image"], strict=True))

        assert sorted(torch_images) == sorted(ray_images) == list(range(12))
        worst = max((torch_images[k] - ray_images[k]).abs().max().item() for k in torch_images)
        print(f"labels match; largest pixel difference between the two pipelines: {worst:.4f}")
        assert all(ray_images[k].shape == torch.Size([3, 128, 128]) for k in ray_images)
        assert worst < 0.1, worst


if __name__ == "__main__":
    main()
