from .box_refinement import BoxRefinement, Reference
from .conditional_detr_decoder import (
    ConditionalDETRDecoder, ConditionalDETRDecoderLayer, ConditionalDETRTransformer, ConditionalSelfAttentionLayer,
)
from .refining_decoder import DecoderOutput, RefiningDecoder
from .deformable_decoder import DeformableTransformerDecoder, DeformableTransformerDecoderLayer
from .deformable_encoder import DeformableTransformerEncoder, DeformableTransformerEncoderLayer
from .deformable_transformer import DeformableTransformer, reset_deformable_parameters
from .ms_detr_decoder import MSDETRDecoder, MSDETRDecoderLayer, MSDETRDecoderOutput
from .levels import FlattenedLevels, flatten_levels, valid_ratios
from .detr_transformer import DetrTransformer, TransformerEncoder, TransformerEncoderLayer
from .proposals import Proposals, TwoStageProposals
from .sam_detr_decoder import SAMDETRDecoder, SAMDETRDecoderLayer
from .sam_detr_transformer import SAMDETRMultiScaleTransformer, SAMDETRTransformer
from .semantics_aligner import SemanticsAligner
from .box_rpb import GlobalCrossAttention
from .plain_detr_decoder import GlobalDecoder, GlobalDecoderLayer
