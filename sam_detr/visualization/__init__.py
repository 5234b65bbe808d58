"""What each model looks at: per detection, the picture its method's paper shows (sampling points, salient
points, attention maps, BoxRPB), from the model's own tensors captured by forward hooks (tools/visualize.py)."""
from .explain import DetectionExplanation, ImageExplanation, decoder_layers, explain, explain_file, picture_of_layer
from .figure import draw_figure, save_png, write_pictures
from .hooks import Call, CallRecorder
from .layer_pictures import LAYER_PICTURES, Geometry, LayerPicture, layer_picture
