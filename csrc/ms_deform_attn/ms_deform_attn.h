// Multi-scale deformable attention (Deformable DETR): device-dispatching entry points.
//
//   value               (N, S, M, D)         float32 / float64 (CPU); also float16 / bfloat16 (CUDA)
//   spatial_shapes      (L, 2) int64         (H_l, W_l) of each level, on the device of value
//   level_start_index   (L,) int64           offset of each level in S, on the device of value
//   sampling_loc        (N, Lq, M, L, P, 2)  (x, y) normalised to [0, 1] over each level
//   attn_weight         (N, Lq, M, L, P)
//   output              (N, Lq, M * D)       dtype of value
//
// sampling_loc and attn_weight have the "op math" dtype of value: float32 for float16 / bfloat16 values
// (fractional pixel positions keep full precision), the value dtype otherwise. All inputs contiguous.
// A location samples the pixel coordinates (x * W_l - 0.5, y * H_l - 0.5) bilinearly with zero
// padding, exactly as grid_sample(align_corners=False) on 2 * loc - 1; the output is the sum over
// levels and points of attn_weight * sample.
#pragma once

#include <vector>

#include <ATen/core/Tensor.h>

namespace sam_detr {

at::Tensor ms_deform_attn_forward(
    const at::Tensor& value,
    const at::Tensor& spatial_shapes,
    const at::Tensor& level_start_index,
    const at::Tensor& sampling_loc,
    const at::Tensor& attn_weight);

// Returns {grad_value, grad_sampling_loc, grad_attn_weight}, with the shapes and dtypes of those inputs.
std::vector<at::Tensor> ms_deform_attn_backward(
    const at::Tensor& value,
    const at::Tensor& spatial_shapes,
    const at::Tensor& level_start_index,
    const at::Tensor& sampling_loc,
    const at::Tensor& attn_weight,
    const at::Tensor& grad_output);

// Device implementations, called after ms_deform_attn_forward/backward checked the arguments.
at::Tensor ms_deform_attn_forward_cpu(
    const at::Tensor& value,
    const at::Tensor& spatial_shapes,
    const at::Tensor& level_start_index,
    const at::Tensor& sampling_loc,
    const at::Tensor& attn_weight);

std::vector<at::Tensor> ms_deform_attn_backward_cpu(
    const at::Tensor& value,
    const at::Tensor& spatial_shapes,
    const at::Tensor& level_start_index,
    const at::Tensor& sampling_loc,
    const at::Tensor& attn_weight,
    const at::Tensor& grad_output);

#ifdef WITH_CUDA
at::Tensor ms_deform_attn_forward_cuda(
    const at::Tensor& value,
    const at::Tensor& spatial_shapes,
    const at::Tensor& level_start_index,
    const at::Tensor& sampling_loc,
    const at::Tensor& attn_weight);

std::vector<at::Tensor> ms_deform_attn_backward_cuda(
    const at::Tensor& value,
    const at::Tensor& spatial_shapes,
    const at::Tensor& level_start_index,
    const at::Tensor& sampling_loc,
    const at::Tensor& attn_weight,
    const at::Tensor& grad_output);
#endif

}  // namespace sam_detr
