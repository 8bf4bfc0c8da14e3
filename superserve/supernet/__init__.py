"""SubNetAct: one resident SuperNet, any SubNet per batch (LayerSelect, WeightSlice, SubnetNorm)."""
from .calibrate import calibrate
from .checkpoint import CheckpointError, load_norm_table, load_supernet, save_norm_table, save_weights
from .config import SubNetConfig, SuperNetSpec, fashion_mnist_spec, imagenet_resnet50_spec
from .extract import PlainResNet, extract, load_extracted, save_extracted
from .resnet import ActivePlan, SuperResNet, subnet_cost

__all__ = [
    "ActivePlan", "CheckpointError", "PlainResNet", "SubNetConfig", "SuperNetSpec", "SuperResNet",
    "calibrate", "extract", "fashion_mnist_spec", "imagenet_resnet50_spec", "load_extracted",
    "load_norm_table", "load_supernet", "save_extracted", "save_norm_table", "save_weights",
    "subnet_cost",
]
