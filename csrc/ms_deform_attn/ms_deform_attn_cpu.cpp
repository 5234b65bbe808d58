// CPU host side of multi-scale deformable attention: CPU-only checks, allocation, threading and the
// kernel variant (AVX-512, AVX2 or portable) that sam_detr::cpu_isa() selects.
//
// Forward: at::parallel_for over the N * Lq queries; each query writes its own output row, so it is
// race-free and its result does not depend on the thread count.
// Backward: one task per (n, head[, channel chunk]) owning grad_value[n, :, m, chunk] and the
// grad_loc / grad_attn entries of its samples, so there are no atomics and no shared writes; the
// split depends on the shapes only, so the gradients are bit-identical run to run and for any
// number of threads.
#include "ms_deform_attn/ms_deform_attn.h"

#include <vector>

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include "cpu_isa.h"
#include "ms_deform_attn/ms_deform_attn_cpu.h"

namespace sam_detr {

namespace {

using ms_deform_attn_cpu::BackwardArgs;
using ms_deform_attn_cpu::Corner;
using ms_deform_attn_cpu::ForwardArgs;
using ms_deform_attn_cpu::Kernels;
using ms_deform_attn_cpu::PointCorners;
using ms_deform_attn_cpu::Sizes;

// Queries per parallel_for chunk: one query is M * L * P samples (128 at the default 8 x 4 x 4).
constexpr int64_t kQueryGrain = 32;
// The backward splits a head's channels into chunks while there are fewer (n, head) tasks than this,
// so small batches with few heads still use the cores. A constant, not the thread count: the split
// changes the summation order of grad_loc / grad_attn.
constexpr int64_t kMinBackwardTasks = 16;
constexpr int64_t kReduceGrain = 4096;

template <typename T>
Kernels<T> select_kernels() {
#if SAM_DETR_CPU_X86_VARIANTS
  switch (cpu_isa()) {
    case CpuIsa::kAvx512:
      return ms_deform_attn_cpu::kernels<CpuIsa::kAvx512, T>();
    case CpuIsa::kAvx2:
      return ms_deform_attn_cpu::kernels<CpuIsa::kAvx2, T>();
    case CpuIsa::kDefault:
      break;
  }
#endif
  return ms_deform_attn_cpu::kernels<CpuIsa::kDefault, T>();
}

// (the level table is checked against S for every device in ms_deform_attn.cpp)
void check_cpu(const at::Tensor& value) {
  TORCH_CHECK(value.scalar_type() == at::kFloat || value.scalar_type() == at::kDouble,
              "ms_deform_attn: the CPU kernels take float32 or float64 values, got ", value.scalar_type(),
              " (sam_detr.layers.ms_deform_attn computes float16 / bfloat16 CPU inputs in float32)");
}

Sizes sizes_of(const at::Tensor& value, const at::Tensor& sampling_loc) {
  return Sizes{value.size(0), value.size(1), value.size(2), value.size(3),
               sampling_loc.size(1), sampling_loc.size(3), sampling_loc.size(4)};
}

}  // namespace

at::Tensor ms_deform_attn_forward_cpu(
    const at::Tensor& value,
    const at::Tensor& spatial_shapes,
    const at::Tensor& level_start_index,
    const at::Tensor& sampling_loc,
    const at::Tensor& attn_weight) {
  check_cpu(value);
  const Sizes sz = sizes_of(value, sampling_loc);
  // every element is written by the kernel
  at::Tensor output = at::empty({sz.N, sz.Lq, sz.M * sz.D}, value.options());
  if (output.numel() == 0) return output;
  AT_DISPATCH_FLOATING_TYPES(value.scalar_type(), "ms_deform_attn_forward_cpu", [&] {
    const ForwardArgs<scalar_t> args{
        sz,
        value.data_ptr<scalar_t>(),
        spatial_shapes.data_ptr<int64_t>(),
        level_start_index.data_ptr<int64_t>(),
        sampling_loc.data_ptr<scalar_t>(),
        attn_weight.data_ptr<scalar_t>(),
        output.data_ptr<scalar_t>()};
    const auto forward = select_kernels<scalar_t>().forward;
    at::parallel_for(0, sz.N * sz.Lq, kQueryGrain, [&](int64_t begin, int64_t end) {
      std::vector<Corner<scalar_t>> corners(sz.M * 4 * sz.L * sz.P);
      std::vector<int64_t> counts(sz.M);
      forward(args, begin, end, corners.data(), counts.data());
    });
  });
  return output;
}

std::vector<at::Tensor> ms_deform_attn_backward_cpu(
    const at::Tensor& value,
    const at::Tensor& spatial_shapes,
    const at::Tensor& level_start_index,
    const at::Tensor& sampling_loc,
    const at::Tensor& attn_weight,
    const at::Tensor& grad_output) {
  check_cpu(value);
  const Sizes sz = sizes_of(value, sampling_loc);
  // all three are fully written by the tasks (grad_value zeroed slice by slice by its owner)
  at::Tensor grad_value = at::empty_like(value);
  at::Tensor grad_loc = at::empty_like(sampling_loc);
  at::Tensor grad_attn = at::empty_like(attn_weight);
  const int64_t heads = sz.N * sz.M;
  if (heads == 0) return {grad_value, grad_loc, grad_attn};
  AT_DISPATCH_FLOATING_TYPES(value.scalar_type(), "ms_deform_attn_backward_cpu", [&] {
    constexpr int64_t kBlock = ms_deform_attn_cpu::kBlockBytes / sizeof(scalar_t);
    const int64_t blocks = std::max<int64_t>(1, (sz.D + kBlock - 1) / kBlock);
    const int64_t num_chunks =
        heads >= kMinBackwardTasks ? 1 : std::min(blocks, (kMinBackwardTasks + heads - 1) / heads);
    const int64_t samples = sz.N * sz.Lq * sz.M * sz.L * sz.P;
    at::Tensor partial;
    if (num_chunks > 1) partial = at::empty({num_chunks, samples, 3}, value.options());
    const BackwardArgs<scalar_t> args{
        sz,
        value.data_ptr<scalar_t>(),
        spatial_shapes.data_ptr<int64_t>(),
        level_start_index.data_ptr<int64_t>(),
        sampling_loc.data_ptr<scalar_t>(),
        attn_weight.data_ptr<scalar_t>(),
        grad_output.data_ptr<scalar_t>(),
        grad_value.data_ptr<scalar_t>(),
        grad_loc.data_ptr<scalar_t>(),
        grad_attn.data_ptr<scalar_t>(),
        num_chunks,
        num_chunks > 1 ? partial.data_ptr<scalar_t>() : nullptr};
    const Kernels<scalar_t> kernels = select_kernels<scalar_t>();
    at::parallel_for(0, heads * num_chunks, 1, [&](int64_t begin, int64_t end) {
      std::vector<PointCorners<scalar_t>> corners(2 * sz.L * sz.P);
      for (int64_t task = begin; task < end; ++task) kernels.backward(args, task, corners.data());
    });
    if (num_chunks > 1) {
      at::parallel_for(0, samples, kReduceGrain, [&](int64_t begin, int64_t end) {
        kernels.backward_reduce(args, begin, end);
      });
    }
  });
  return {grad_value, grad_loc, grad_attn};
}

}  // namespace sam_detr
