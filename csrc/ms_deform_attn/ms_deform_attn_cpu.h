// Interface between the CPU host code (ms_deform_attn_cpu.cpp: checks, allocation, threading, ISA
// choice) and the kernels (ms_deform_attn_cpu_kernel.h), which are compiled once per instruction set in
// ms_deform_attn_cpu_isa_<isa>.cpp. Plain structs and declarations only: the per-ISA translation units
// compile everything after this header with AVX2 or AVX-512 enabled, and nothing shared between them
// may carry such code (the linker would keep one copy of an inline function for every caller).
#pragma once

#include <cstdint>

#include "cpu_isa.h"

namespace sam_detr {
namespace ms_deform_attn_cpu {

// Channels of one block, in bytes (32 float or 16 double channels): a whole number of SIMD vectors on
// every ISA (8 xmm, 4 ymm or 2 zmm). The forward accumulates one block in registers; the backward
// splits a head's channels into chunks at block boundaries.
constexpr int kBlockBytes = 128;

// value (N, S, M, D); sampling_loc (N, Lq, M, L, P, 2); attn_weight (N, Lq, M, L, P)
struct Sizes {
  int64_t N, S, M, D, Lq, L, P;
};

template <typename T>
struct ForwardArgs {
  Sizes sz;
  const T* value;
  const int64_t* spatial_shapes;     // (L, 2): H, W
  const int64_t* level_start_index;  // (L,)
  const T* sampling_loc;
  const T* attn_weight;
  T* output;  // (N, Lq, M * D)
};

// The backward runs one task per (n, m, channel chunk); each task owns grad_value[n, :, m, chunk].
// With one chunk per head the tasks write grad_loc / grad_attn directly. With several, each task
// writes its partial channel sums to `partial` (num_chunks, N, Lq, M, L, P, 3) and backward_reduce
// adds them in chunk order, so the result depends on the shapes only, never on the thread count.
template <typename T>
struct BackwardArgs {
  Sizes sz;
  const T* value;
  const int64_t* spatial_shapes;
  const int64_t* level_start_index;
  const T* sampling_loc;
  const T* attn_weight;
  const T* grad_output;  // (N, Lq, M * D)
  T* grad_value;         // (N, S, M, D)
  T* grad_loc;           // (N, Lq, M, L, P, 2)
  T* grad_attn;          // (N, Lq, M, L, P)
  int64_t num_chunks;
  T* partial;
};

// A bilinear corner that lies inside its level: offset of its row in `value` (elements, relative to
// the (n, m) slice) and its weight, already multiplied by the attention weight.
template <typename T>
struct Corner {
  int64_t offset;
  T weight;
};

// The bilinear corners of one sampling point that lie inside its level: row offsets as in Corner,
// weights, and the weights' derivatives w.r.t. the pixel coordinates (w_im, h_im).
template <typename T>
struct PointCorners {
  int64_t n;
  int64_t offset[4];
  T w[4], dw[4], dh[4];
};

template <typename T>
struct Kernels {
  // Output rows [begin, end) of the flattened (N * Lq) queries; scratch for M * 4 * L * P corners and
  // M counts.
  void (*forward)(const ForwardArgs<T>& args, int64_t begin, int64_t end, Corner<T>* corners, int64_t* counts);
  // Task in [0, N * M * num_chunks); scratch for 2 * L * P points.
  void (*backward)(const BackwardArgs<T>& args, int64_t task, PointCorners<T>* corners);
  // Samples [begin, end) of the flattened (N * Lq * M * L * P); only when num_chunks > 1.
  void (*backward_reduce)(const BackwardArgs<T>& args, int64_t begin, int64_t end);
};

// Defined in ms_deform_attn_cpu_isa_<isa>.cpp for T = float and double.
template <CpuIsa isa, typename T>
Kernels<T> kernels();

}  // namespace ms_deform_attn_cpu
}  // namespace sam_detr
