// CUDA kernels of multi-scale deformable attention (shapes and semantics in ms_deform_attn.h).
//
// Dtypes: value / output / grad_output in float32, float64, float16 or bfloat16; locations, attention
// weights, their gradients and every accumulation in acc_t = at::opmath_type (float32 for the half
// types). grad_value is accumulated in an acc_t buffer and cast back for the half types.
//
// Forward: one thread per (n, q, m, vector of kVec channels), kVec = 16 bytes of channels (4 float,
// 2 double, 8 half) when D and the pointers allow 16-byte loads, else 1. The thread walks the L * P
// points of its (n, q, m), reads each location / weight once (the group's threads read the same
// address: one broadcast transaction), loads the inside corners as 16-byte vectors and accumulates
// in registers; one vector store, no memset of the output.
//
// Backward: a group of `group` lanes (a power of two <= 32, so a group never straddles a warp) per
// (n, q, m); lane j handles the channel vectors j, j + group, ... For each point it atomically adds
// a * w_c * g into grad_value at each inside corner (float4 atomics on sm_90+), forms the corner dot
// products <g, v_c>, and the group sums them with xor shuffles; lane 0 writes grad_loc / grad_attn.
// Only grad_value is zeroed. The atomics make grad_value's rounding order nondeterministic, which is
// reported to torch.use_deterministic_algorithms.
#include "ms_deform_attn/ms_deform_attn.h"

#include <algorithm>
#include <cstdint>

#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
// c10's stream header rather than ATen/cuda/CUDAContext.h, which pulls in cuBLAS / cuSPARSE headers
// that a minimal CUDA toolkit lacks
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

namespace sam_detr {

namespace {

constexpr int kThreads = 256;
// Grid-stride loops cover any size; this only keeps the grid within the hardware limit.
constexpr int64_t kMaxBlocks = int64_t{1} << 30;
constexpr int kWarp = 32;

struct Sizes {
  int64_t N, S, M, D, Lq, L, P;
};

template <typename T, int kVec>
struct alignas(sizeof(T) * kVec) Pack {
  T v[kVec];
};

// The four bilinear corners of a point: spatial index within the level, whether it is inside the
// map (zero padding otherwise), its weight and the weight's derivatives w.r.t. the pixel
// coordinates (w_im, h_im).
template <typename acc_t>
struct Bilinear {
  int64_t index[4];
  bool inside[4];
  acc_t w[4], dw[4], dh[4];
};

// Pixel coordinates (x * W - 0.5, y * H - 0.5), as grid_sample with align_corners=False. Returns
// false when the point is outside (-1, W) x (-1, H), where no corner can be inside (the official
// kernel's test; it also rejects NaN before the float-to-int conversion).
template <typename acc_t>
__device__ __forceinline__ bool bilinear(acc_t x, acc_t y, int64_t H, int64_t W, Bilinear<acc_t>& b) {
  const acc_t w_im = x * static_cast<acc_t>(W) - static_cast<acc_t>(0.5);
  const acc_t h_im = y * static_cast<acc_t>(H) - static_cast<acc_t>(0.5);
  if (!(h_im > acc_t(-1) && w_im > acc_t(-1) && h_im < static_cast<acc_t>(H) && w_im < static_cast<acc_t>(W))) {
    return false;
  }
  // floor, exact in this range
  int64_t h0 = static_cast<int64_t>(h_im);
  if (h_im < static_cast<acc_t>(h0)) --h0;
  int64_t w0 = static_cast<int64_t>(w_im);
  if (w_im < static_cast<acc_t>(w0)) --w0;
  const acc_t lh = h_im - static_cast<acc_t>(h0), lw = w_im - static_cast<acc_t>(w0);
  const acc_t hh = acc_t(1) - lh, hw = acc_t(1) - lw;
  const int64_t hs[4] = {h0, h0, h0 + 1, h0 + 1};
  const int64_t ws[4] = {w0, w0 + 1, w0, w0 + 1};
  const acc_t weights[4] = {hh * hw, hh * lw, lh * hw, lh * lw};
  const acc_t d_w[4] = {-hh, hh, -lh, lh};
  const acc_t d_h[4] = {-hw, -lw, hw, lw};
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    b.inside[k] = hs[k] >= 0 && hs[k] < H && ws[k] >= 0 && ws[k] < W;
    b.index[k] = hs[k] * W + ws[k];
    b.w[k] = weights[k];
    b.dw[k] = d_w[k];
    b.dh[k] = d_h[k];
  }
  return true;
}

template <typename scalar_t, int kVec>
__global__ void __launch_bounds__(kThreads) ms_deform_attn_forward_kernel(
    const scalar_t* __restrict__ value,
    const int64_t* __restrict__ spatial_shapes,
    const int64_t* __restrict__ level_start_index,
    const at::opmath_type<scalar_t>* __restrict__ sampling_loc,
    const at::opmath_type<scalar_t>* __restrict__ attn_weight,
    scalar_t* __restrict__ output,
    const Sizes s) {
  using acc_t = at::opmath_type<scalar_t>;
  using VecT = Pack<scalar_t, kVec>;
  const int64_t vecs = s.D / kVec;
  const int64_t total = s.N * s.Lq * s.M * vecs;
  const int64_t MD = s.M * s.D;
  for (int64_t t = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; t < total;
       t += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t qm = t / vecs;  // (n * Lq + q) * M + m
    const int64_t c = (t - qm * vecs) * kVec;
    const int64_t m = qm % s.M;
    const int64_t n = qm / (s.M * s.Lq);
    const scalar_t* value_nm = value + n * s.S * MD + m * s.D + c;
    const acc_t* loc = sampling_loc + qm * s.L * s.P * 2;
    const acc_t* attn = attn_weight + qm * s.L * s.P;
    acc_t acc[kVec];
#pragma unroll
    for (int j = 0; j < kVec; ++j) acc[j] = acc_t(0);
    for (int64_t l = 0; l < s.L; ++l) {
      const int64_t H = spatial_shapes[2 * l], W = spatial_shapes[2 * l + 1];
      const scalar_t* value_l = value_nm + level_start_index[l] * MD;
      for (int64_t p = 0; p < s.P; ++p) {
        const int64_t i = l * s.P + p;
        Bilinear<acc_t> b;
        if (!bilinear(loc[2 * i], loc[2 * i + 1], H, W, b)) continue;
        const acc_t a = attn[i];
#pragma unroll
        for (int k = 0; k < 4; ++k) {
          if (!b.inside[k]) continue;
          const VecT v = *reinterpret_cast<const VecT*>(value_l + b.index[k] * MD);
          const acc_t weight = a * b.w[k];
#pragma unroll
          for (int j = 0; j < kVec; ++j) acc[j] += weight * static_cast<acc_t>(v.v[j]);
        }
      }
    }
    VecT out;
#pragma unroll
    for (int j = 0; j < kVec; ++j) out.v[j] = static_cast<scalar_t>(acc[j]);
    *reinterpret_cast<VecT*>(output + qm * s.D + c) = out;
  }
}

// p[0..3] += (a, b, c, d) atomically per element, p 16-byte aligned: one vector atomic (red.v4.f32) where
// the architecture has it (sm_90+), else four scalar ones. The preprocessor, not `if constexpr`, picks
// the branch: below sm_90 the float4 overload of atomicAdd is not declared at all, and a call that does
// not depend on a template parameter is resolved even in a discarded branch.
__device__ __forceinline__ void atomic_add4(float* p, float a, float b, float c, float d) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  atomicAdd(reinterpret_cast<float4*>(p), make_float4(a, b, c, d));
#else
  atomicAdd(p, a);
  atomicAdd(p + 1, b);
  atomicAdd(p + 2, c);
  atomicAdd(p + 3, d);
#endif
}

// grad[j] += scale * g[j] for j < kVec, atomically per element.
template <int kVec>
__device__ __forceinline__ void atomic_add_scaled(float* grad, float scale, const float* g) {
  if constexpr (kVec % 4 == 0) {
    // 16-byte aligned: kVec % 4 == 0 only on the vector path, whose offsets are multiples of kVec in a
    // 16-byte aligned buffer
#pragma unroll
    for (int j = 0; j < kVec; j += 4) {
      atomic_add4(grad + j, scale * g[j], scale * g[j + 1], scale * g[j + 2], scale * g[j + 3]);
    }
  } else {
#pragma unroll
    for (int j = 0; j < kVec; ++j) atomicAdd(grad + j, scale * g[j]);
  }
}

template <int kVec>
__device__ __forceinline__ void atomic_add_scaled(double* grad, double scale, const double* g) {
#pragma unroll
  for (int j = 0; j < kVec; ++j) atomicAdd(grad + j, scale * g[j]);
}

template <typename acc_t>
__device__ __forceinline__ acc_t group_sum(acc_t x, int group) {
  for (int offset = group / 2; offset > 0; offset /= 2) x += __shfl_xor_sync(0xffffffffu, x, offset);
  return x;
}

template <typename scalar_t, int kVec>
__global__ void __launch_bounds__(kThreads) ms_deform_attn_backward_kernel(
    const scalar_t* __restrict__ value,
    const int64_t* __restrict__ spatial_shapes,
    const int64_t* __restrict__ level_start_index,
    const at::opmath_type<scalar_t>* __restrict__ sampling_loc,
    const at::opmath_type<scalar_t>* __restrict__ attn_weight,
    const scalar_t* __restrict__ grad_output,
    at::opmath_type<scalar_t>* __restrict__ grad_value,  // (N, S, M, D), zeroed
    at::opmath_type<scalar_t>* __restrict__ grad_loc,
    at::opmath_type<scalar_t>* __restrict__ grad_attn,
    const Sizes s,
    const int group) {
  using acc_t = at::opmath_type<scalar_t>;
  using VecT = Pack<scalar_t, kVec>;
  const int lane = threadIdx.x & (group - 1);
  const int64_t groups_per_block = kThreads / group;
  const int64_t total = s.N * s.Lq * s.M;
  const int64_t MD = s.M * s.D;
  // `first` is the same for every thread of the block, so all threads run the same iterations and
  // reach every shuffle together; threads past the end take part with zeros.
  for (int64_t first = blockIdx.x * groups_per_block; first < total; first += gridDim.x * groups_per_block) {
    const int64_t unclamped = first + threadIdx.x / group;
    const bool active = unclamped < total;
    const int64_t qm = active ? unclamped : total - 1;  // (n * Lq + q) * M + m
    const int64_t m = qm % s.M;
    const int64_t n = qm / (s.M * s.Lq);
    const scalar_t* value_nm = value + n * s.S * MD + m * s.D;
    acc_t* grad_value_nm = grad_value + n * s.S * MD + m * s.D;
    const scalar_t* g_row = grad_output + qm * s.D;
    for (int64_t l = 0; l < s.L; ++l) {
      const int64_t H = spatial_shapes[2 * l], W = spatial_shapes[2 * l + 1];
      const int64_t level_offset = level_start_index[l] * MD;
      for (int64_t p = 0; p < s.P; ++p) {
        const int64_t i = (qm * s.L + l) * s.P + p;
        const acc_t a = attn_weight[i];
        // the lane's share of <g, v_c> combined with w_c, dw_c and dh_c over its channels
        acc_t s_attn = 0, s_w = 0, s_h = 0;
        Bilinear<acc_t> b;
        if (active && bilinear(sampling_loc[2 * i], sampling_loc[2 * i + 1], H, W, b)) {
          for (int64_t c = static_cast<int64_t>(lane) * kVec; c < s.D; c += static_cast<int64_t>(group) * kVec) {
            const VecT gv = *reinterpret_cast<const VecT*>(g_row + c);
            acc_t g[kVec];
#pragma unroll
            for (int j = 0; j < kVec; ++j) g[j] = static_cast<acc_t>(gv.v[j]);
#pragma unroll
            for (int k = 0; k < 4; ++k) {
              if (!b.inside[k]) continue;
              const int64_t offset = level_offset + b.index[k] * MD + c;
              const VecT v = *reinterpret_cast<const VecT*>(value_nm + offset);
              acc_t dot = 0;
#pragma unroll
              for (int j = 0; j < kVec; ++j) dot += g[j] * static_cast<acc_t>(v.v[j]);
              s_attn += b.w[k] * dot;
              s_w += b.dw[k] * dot;
              s_h += b.dh[k] * dot;
              atomic_add_scaled<kVec>(grad_value_nm + offset, a * b.w[k], g);
            }
          }
        }
        s_attn = group_sum(s_attn, group);
        s_w = group_sum(s_w, group);
        s_h = group_sum(s_h, group);
        if (active && lane == 0) {
          grad_attn[i] = s_attn;
          grad_loc[2 * i] = s_w * (a * static_cast<acc_t>(W));
          grad_loc[2 * i + 1] = s_h * (a * static_cast<acc_t>(H));
        }
      }
    }
  }
}

bool aligned16(const void* p) {
  return reinterpret_cast<uintptr_t>(p) % 16 == 0;
}

int64_t num_blocks(int64_t work_items, int64_t items_per_block) {
  return std::min((work_items + items_per_block - 1) / items_per_block, kMaxBlocks);
}

Sizes sizes_of(const at::Tensor& value, const at::Tensor& sampling_loc) {
  return Sizes{value.size(0), value.size(1), value.size(2), value.size(3),
               sampling_loc.size(1), sampling_loc.size(3), sampling_loc.size(4)};
}

template <typename scalar_t, int kVec>
void launch_forward(
    const at::Tensor& value,
    const at::Tensor& spatial_shapes,
    const at::Tensor& level_start_index,
    const at::Tensor& sampling_loc,
    const at::Tensor& attn_weight,
    at::Tensor& output,
    const Sizes& s) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t blocks = num_blocks(s.N * s.Lq * s.M * (s.D / kVec), kThreads);
  ms_deform_attn_forward_kernel<scalar_t, kVec><<<blocks, kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
      value.data_ptr<scalar_t>(),
      spatial_shapes.data_ptr<int64_t>(),
      level_start_index.data_ptr<int64_t>(),
      sampling_loc.data_ptr<acc_t>(),
      attn_weight.data_ptr<acc_t>(),
      output.data_ptr<scalar_t>(),
      s);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <typename scalar_t, int kVec>
void launch_backward(
    const at::Tensor& value,
    const at::Tensor& spatial_shapes,
    const at::Tensor& level_start_index,
    const at::Tensor& sampling_loc,
    const at::Tensor& attn_weight,
    const at::Tensor& grad_output,
    at::Tensor& grad_value,
    at::Tensor& grad_loc,
    at::Tensor& grad_attn,
    const Sizes& s) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t vecs = s.D / kVec;
  int group = 1;
  while (group < vecs && group < kWarp) group *= 2;
  const int64_t blocks = num_blocks(s.N * s.Lq * s.M, kThreads / group);
  ms_deform_attn_backward_kernel<scalar_t, kVec><<<blocks, kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
      value.data_ptr<scalar_t>(),
      spatial_shapes.data_ptr<int64_t>(),
      level_start_index.data_ptr<int64_t>(),
      sampling_loc.data_ptr<acc_t>(),
      attn_weight.data_ptr<acc_t>(),
      grad_output.data_ptr<scalar_t>(),
      grad_value.data_ptr<acc_t>(),
      grad_loc.data_ptr<acc_t>(),
      grad_attn.data_ptr<acc_t>(),
      s,
      group);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace

at::Tensor ms_deform_attn_forward_cuda(
    const at::Tensor& value,
    const at::Tensor& spatial_shapes,
    const at::Tensor& level_start_index,
    const at::Tensor& sampling_loc,
    const at::Tensor& attn_weight) {
  const c10::cuda::CUDAGuard device_guard(value.device());
  const Sizes s = sizes_of(value, sampling_loc);
  // every element is written by the kernel
  at::Tensor output = at::empty({s.N, s.Lq, s.M * s.D}, value.options());
  if (output.numel() == 0) return output;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, value.scalar_type(), "ms_deform_attn_forward_cuda", [&] {
    constexpr int kVec = 16 / sizeof(scalar_t);
    if (s.D % kVec == 0 && aligned16(value.data_ptr()) && aligned16(output.data_ptr())) {
      launch_forward<scalar_t, kVec>(value, spatial_shapes, level_start_index, sampling_loc, attn_weight, output, s);
    } else {
      launch_forward<scalar_t, 1>(value, spatial_shapes, level_start_index, sampling_loc, attn_weight, output, s);
    }
  });
  return output;
}

std::vector<at::Tensor> ms_deform_attn_backward_cuda(
    const at::Tensor& value,
    const at::Tensor& spatial_shapes,
    const at::Tensor& level_start_index,
    const at::Tensor& sampling_loc,
    const at::Tensor& attn_weight,
    const at::Tensor& grad_output) {
  const c10::cuda::CUDAGuard device_guard(value.device());
  at::globalContext().alertNotDeterministic("ms_deform_attn_backward_cuda (atomicAdd into grad_value)");
  const Sizes s = sizes_of(value, sampling_loc);
  // the atomics accumulate into it; grad_loc / grad_attn are fully written
  at::Tensor grad_value_acc = at::zeros(value.sizes(), value.options().dtype(at::toOpMathType(value.scalar_type())));
  at::Tensor grad_loc = at::empty_like(sampling_loc);
  at::Tensor grad_attn = at::empty_like(attn_weight);
  if (s.N * s.Lq * s.M > 0) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, value.scalar_type(), "ms_deform_attn_backward_cuda", [&] {
      constexpr int kVec = 16 / sizeof(scalar_t);
      if (s.D % kVec == 0 && aligned16(value.data_ptr()) && aligned16(grad_output.data_ptr()) &&
          aligned16(grad_value_acc.data_ptr())) {
        launch_backward<scalar_t, kVec>(value, spatial_shapes, level_start_index, sampling_loc, attn_weight,
                                        grad_output, grad_value_acc, grad_loc, grad_attn, s);
      } else {
        launch_backward<scalar_t, 1>(value, spatial_shapes, level_start_index, sampling_loc, attn_weight,
                                     grad_output, grad_value_acc, grad_loc, grad_attn, s);
      }
    });
  }
  at::Tensor grad_value =
      grad_value_acc.scalar_type() == value.scalar_type() ? grad_value_acc : grad_value_acc.to(value.scalar_type());
  return {grad_value, grad_loc, grad_attn};
}

}  // namespace sam_detr
