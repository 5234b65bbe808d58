// Argument checks shared by the devices, then dispatch on the device of `value`.
#include "ms_deform_attn/ms_deform_attn.h"

#include <ATen/ATen.h>
#include <ATen/OpMathType.h>

namespace sam_detr {

namespace {

void check_tensor(const at::Tensor& t, const char* name, const at::Tensor& value) {
  TORCH_CHECK(t.defined(), "ms_deform_attn: ", name, " is undefined");
  TORCH_CHECK(t.device() == value.device(), "ms_deform_attn: ", name, " is on ", t.device(),
              " but value is on ", value.device(), "; all inputs must be on the same device");
  TORCH_CHECK(t.is_contiguous(), "ms_deform_attn: ", name, " must be contiguous");
}

// CPU always; CUDA where sam_detr._C was built with its CUDA kernels.
void check_device(const at::Tensor& value) {
  if (value.is_cpu()) return;
#ifdef WITH_CUDA
  TORCH_CHECK(value.is_cuda(), "ms_deform_attn: no kernel for device ", value.device(), " (CPU and CUDA only)");
#else
  TORCH_CHECK(false, "ms_deform_attn: no kernel for device ", value.device(),
              ": sam_detr._C was built without CUDA kernels. Rebuild it with the CUDA toolkit: "
              "FORCE_CUDA=1 pip install --no-build-isolation -e . (README, Compiled ops)");
#endif
}

// The kernels index value with the level table, so every level must fit in value's S. The table is read
// on the host: for CUDA tensors that is a copy of 3 * L int64 to the host, which waits for the stream to
// reach it (one synchronisation per call; it also rules out capturing the op in a CUDA graph).
void check_levels(const at::Tensor& spatial_shapes, const at::Tensor& level_start_index, int64_t S) {
  const at::Tensor shapes_host = spatial_shapes.cpu(), starts_host = level_start_index.cpu();
  const int64_t* shapes = shapes_host.data_ptr<int64_t>();
  const int64_t* starts = starts_host.data_ptr<int64_t>();
  for (int64_t l = 0; l < shapes_host.size(0); ++l) {
    const int64_t H = shapes[2 * l], W = shapes[2 * l + 1], start = starts[l];
    TORCH_CHECK(H >= 0 && W >= 0 && start >= 0 && start <= S && H * W <= S - start, "ms_deform_attn: level ", l,
                " with spatial shape (", H, ", ", W, ") and start ", start, " does not fit in value's S = ", S);
  }
}

// Checks every input against value (N, S, M, D); grad_output is checked when defined.
void check_inputs(
    const at::Tensor& value,
    const at::Tensor& spatial_shapes,
    const at::Tensor& level_start_index,
    const at::Tensor& sampling_loc,
    const at::Tensor& attn_weight,
    const at::Tensor& grad_output) {
  TORCH_CHECK(value.defined(), "ms_deform_attn: value is undefined");
  check_device(value);
  check_tensor(value, "value", value);
  TORCH_CHECK(value.dim() == 4, "ms_deform_attn: value must be 4-D (N, S, M, D), got shape ", value.sizes());
  const auto dtype = value.scalar_type();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kDouble || dtype == at::kHalf || dtype == at::kBFloat16,
              "ms_deform_attn: value must be float32, float64, float16 or bfloat16, got ", dtype);
  const int64_t N = value.size(0), M = value.size(2), D = value.size(3);

  check_tensor(spatial_shapes, "spatial_shapes", value);
  TORCH_CHECK(spatial_shapes.dim() == 2 && spatial_shapes.size(1) == 2,
              "ms_deform_attn: spatial_shapes must have shape (L, 2), got ", spatial_shapes.sizes());
  TORCH_CHECK(spatial_shapes.scalar_type() == at::kLong, "ms_deform_attn: spatial_shapes must be int64, got ",
              spatial_shapes.scalar_type());
  const int64_t L = spatial_shapes.size(0);

  check_tensor(level_start_index, "level_start_index", value);
  TORCH_CHECK(level_start_index.dim() == 1 && level_start_index.size(0) == L,
              "ms_deform_attn: level_start_index must have shape (L,) = (", L, ",), got ", level_start_index.sizes());
  TORCH_CHECK(level_start_index.scalar_type() == at::kLong, "ms_deform_attn: level_start_index must be int64, got ",
              level_start_index.scalar_type());
  check_levels(spatial_shapes, level_start_index, value.size(1));

  const auto loc_dtype = at::toOpMathType(dtype);
  check_tensor(sampling_loc, "sampling_loc", value);
  TORCH_CHECK(sampling_loc.dim() == 6 && sampling_loc.size(0) == N && sampling_loc.size(2) == M &&
                  sampling_loc.size(3) == L && sampling_loc.size(5) == 2,
              "ms_deform_attn: sampling_loc must have shape (N, Lq, M, L, P, 2) with (N, M, L) = (", N, ", ", M, ", ",
              L, ") from value and spatial_shapes, got ", sampling_loc.sizes());
  TORCH_CHECK(sampling_loc.scalar_type() == loc_dtype, "ms_deform_attn: sampling_loc must be ", loc_dtype,
              " for a ", dtype, " value, got ", sampling_loc.scalar_type());
  const int64_t Lq = sampling_loc.size(1), P = sampling_loc.size(4);

  check_tensor(attn_weight, "attn_weight", value);
  TORCH_CHECK(attn_weight.sizes() == at::IntArrayRef({N, Lq, M, L, P}),
              "ms_deform_attn: attn_weight must have shape (N, Lq, M, L, P) = (", N, ", ", Lq, ", ", M, ", ", L, ", ",
              P, "), got ", attn_weight.sizes());
  TORCH_CHECK(attn_weight.scalar_type() == loc_dtype, "ms_deform_attn: attn_weight must be ", loc_dtype, " for a ",
              dtype, " value, got ", attn_weight.scalar_type());

  if (grad_output.defined()) {
    check_tensor(grad_output, "grad_output", value);
    TORCH_CHECK(grad_output.sizes() == at::IntArrayRef({N, Lq, M * D}),
                "ms_deform_attn: grad_output must have shape (N, Lq, M * D) = (", N, ", ", Lq, ", ", M * D,
                "), got ", grad_output.sizes());
    TORCH_CHECK(grad_output.scalar_type() == dtype, "ms_deform_attn: grad_output must be ", dtype, " like value, got ",
                grad_output.scalar_type());
  }
}

}  // namespace

at::Tensor ms_deform_attn_forward(
    const at::Tensor& value,
    const at::Tensor& spatial_shapes,
    const at::Tensor& level_start_index,
    const at::Tensor& sampling_loc,
    const at::Tensor& attn_weight) {
  check_inputs(value, spatial_shapes, level_start_index, sampling_loc, attn_weight, at::Tensor());
#ifdef WITH_CUDA
  if (value.is_cuda()) {
    return ms_deform_attn_forward_cuda(value, spatial_shapes, level_start_index, sampling_loc, attn_weight);
  }
#endif
  return ms_deform_attn_forward_cpu(value, spatial_shapes, level_start_index, sampling_loc, attn_weight);
}

std::vector<at::Tensor> ms_deform_attn_backward(
    const at::Tensor& value,
    const at::Tensor& spatial_shapes,
    const at::Tensor& level_start_index,
    const at::Tensor& sampling_loc,
    const at::Tensor& attn_weight,
    const at::Tensor& grad_output) {
  TORCH_CHECK(grad_output.defined(), "ms_deform_attn: grad_output is undefined");
  check_inputs(value, spatial_shapes, level_start_index, sampling_loc, attn_weight, grad_output);
#ifdef WITH_CUDA
  if (value.is_cuda()) {
    return ms_deform_attn_backward_cuda(
        value, spatial_shapes, level_start_index, sampling_loc, attn_weight, grad_output);
  }
#endif
  return ms_deform_attn_backward_cpu(value, spatial_shapes, level_start_index, sampling_loc, attn_weight, grad_output);
}

}  // namespace sam_detr
