"""Transformer SuperNets (ViT, BERT): DynaBERT-style LayerSelect and head / FFN WeightSlice."""
from .model import SuperTransformer, TransformerPlan, subnet_cost
from .space import (FAMILIES, FAMILY_BERT, FAMILY_VIT, TransformerChoice, TransformerSpec, bert_spec,
                    fashion_mnist_vit_spec, kept_layers)

__all__ = ["FAMILIES", "FAMILY_BERT", "FAMILY_VIT", "SuperTransformer", "TransformerChoice", "TransformerPlan",
           "TransformerSpec", "bert_spec", "fashion_mnist_vit_spec", "kept_layers", "subnet_cost"]
