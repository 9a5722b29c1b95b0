"""Datasets: the embedded default (scikit-learn's 8x8 digits) and tensorflow-datasets pipelines."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    name: str
    tfds_name: str | None  # None: shipped inside an installed package, no download
    image_size: int
    channels: int
    num_classes: int

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.image_size, self.image_size, self.channels)


DATASETS: dict[str, DatasetInfo] = {
    info.name: info
    for info in (
        DatasetInfo("digits", None, 8, 1, 10),
        DatasetInfo("cifar10", "cifar10", 32, 3, 10),
        DatasetInfo("cifar100", "cifar100", 32, 3, 100),
        DatasetInfo("svhn", "svhn_cropped", 32, 3, 10),
        # NAS-Bench-201's ImageNet16-120: 16x16 ImageNet, the first 120 classes.
        DatasetInfo("imagenet16-120", "imagenet_resized/16x16", 16, 3, 120),
        DatasetInfo("imagenet", "imagenet2012", 224, 3, 1000),
    )
}


def get_info(name: str) -> DatasetInfo:
    try:
        return DATASETS[name]
    except KeyError:
        raise KeyError(f"unknown dataset {name!r}; valid datasets: {', '.join(DATASETS)}") from None
