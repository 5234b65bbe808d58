"""The quickstart configs' shared sizing: every method on the main job takes the quickstart DETR's backbone,
levels, queries, classes and transformer size, so that the methods differ in their novelty only."""
__all__ = ["LAYER_ARGS", "like_quickstart_detr"]

# the names every transformer layer gives to the width, the heads, the FFN's hidden width and the dropout
LAYER_ARGS = ("d_model", "nhead", "dim_feedforward", "dropout")


def like_quickstart_detr(model, detr, encoder=None, decoder=None, **layer_args):
    """Sizes `model` (a LazyConfig node of a DETR-family model) like `detr` (the quickstart DETR's): backbone,
    in_features, num_queries, num_classes; and, in `encoder` and `decoder` (nodes with a `layer` and
    `num_layers`; None: the model has no such part), the layer's width, heads, FFN and dropout (`LAYER_ARGS`),
    plus `layer_args`, and DETR's number of layers."""
    t = detr.transformer
    model.backbone = detr.backbone
    model.in_features = detr.in_features
    model.num_queries = detr.num_queries
    model.criterion.num_classes = detr.criterion.num_classes
    sizes = dict(zip(LAYER_ARGS, (t.d_model, t.nhead, t.dim_feedforward, t.dropout)), **layer_args)
    for part, num_layers in ((encoder, t.num_encoder_layers), (decoder, t.num_decoder_layers)):
        if part is not None:
            part.layer.update(sizes)
            part.num_layers = num_layers
