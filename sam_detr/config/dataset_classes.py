"""The class count of a model config, taken from its train dataset when the model is built."""
from detectron2.config import LazyCall as L

from ..data.datasets import num_classes_of

__all__ = ["train_dataset_num_classes"]


def train_dataset_num_classes():
    """A LazyConfig node for a model's `num_classes`: the number of classes of the config's train dataset
    (`dataloader.train.dataset`: its `names`, registered from its `json_file` and `image_root` when set), read
    from the dataset's metadata when the model is instantiated."""
    return L(num_classes_of)(
        names="${dataloader.train.dataset.names}",
        json_file="${oc.select:dataloader.train.dataset.json_file,null}",
        image_root="${oc.select:dataloader.train.dataset.image_root,null}",
    )
