"""Make the plugin's fixtures available here even when the package (and its entry point) is not installed.

When the ``pytest11`` entry point is installed too, these module-level definitions simply shadow the
plugin's identical ones for this directory.
"""

from torchray_loader.testing.plugin import (  # noqa: F401 - imported fixtures are registered for this directory
    trl_cifar10_root,
    trl_image_folder,
    trl_mnist_root,
    trl_parquet_dir,
    trl_tiny_dataset,
)
