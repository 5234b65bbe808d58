// RoIAlign with torchvision's semantics (torchvision.ops.roi_align), bit for bit on the same
// floating-point ops. Only a CPU kernel exists: on CUDA the Python layer uses torchvision's own.
#pragma once

#include <torch/extension.h>

namespace sam_detr {

// input (N, C, H, W) float32/float64, any strides; rois (K, 5) of the same dtype, rows
// (batch_index, x1, y1, x2, y2) in image coordinates (spatial_scale maps them onto the input).
// Returns (K, C, pooled_height, pooled_width), contiguous.
at::Tensor roi_align_forward_cpu(
    const at::Tensor& input,
    const at::Tensor& rois,
    double spatial_scale,
    int64_t pooled_height,
    int64_t pooled_width,
    int64_t sampling_ratio,
    bool aligned);

// grad_output (K, C, pooled_height, pooled_width); returns the gradient of the input,
// (batch_size, channels, height, width), laid out channels-last when `channels_last`.
// Deterministic: the result does not depend on the number of threads.
at::Tensor roi_align_backward_cpu(
    const at::Tensor& grad_output,
    const at::Tensor& rois,
    double spatial_scale,
    int64_t pooled_height,
    int64_t pooled_width,
    int64_t batch_size,
    int64_t channels,
    int64_t height,
    int64_t width,
    int64_t sampling_ratio,
    bool aligned,
    bool channels_last);

inline at::Tensor roi_align_forward(
    const at::Tensor& input,
    const at::Tensor& rois,
    double spatial_scale,
    int64_t pooled_height,
    int64_t pooled_width,
    int64_t sampling_ratio,
    bool aligned) {
  TORCH_CHECK(
      input.device().is_cpu() && rois.device().is_cpu(),
      "roi_align: sam_detr._C has only a CPU kernel (input is on ", input.device(),
      ", rois on ", rois.device(), "); use torchvision.ops.roi_align on other devices");
  return roi_align_forward_cpu(
      input, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned);
}

inline at::Tensor roi_align_backward(
    const at::Tensor& grad_output,
    const at::Tensor& rois,
    double spatial_scale,
    int64_t pooled_height,
    int64_t pooled_width,
    int64_t batch_size,
    int64_t channels,
    int64_t height,
    int64_t width,
    int64_t sampling_ratio,
    bool aligned,
    bool channels_last) {
  TORCH_CHECK(
      grad_output.device().is_cpu() && rois.device().is_cpu(),
      "roi_align: sam_detr._C has only a CPU kernel (grad_output is on ", grad_output.device(),
      ", rois on ", rois.device(), "); use torchvision.ops.roi_align on other devices");
  return roi_align_backward_cpu(
      grad_output, rois, spatial_scale, pooled_height, pooled_width, batch_size, channels,
      height, width, sampling_ratio, aligned, channels_last);
}

}  // namespace sam_detr
