// CPU RoIAlign with torchvision's semantics.
//
// Every sampling coordinate, bilinear weight, sum and quotient is computed with the same
// expression, in the same type and the same order as torchvision's CPU kernel, so forward values
// and input gradients agree with it bit for bit where neither build contracts multiply-adds into
// FMAs (torchvision's x86-64 wheels do not; this file forbids it). What differs is the work layout:
//
// * Both passes are split into (image, channel block) tasks run in parallel. A task keeps its
//   block of the image channels-last, (H * W, block), in a scratch buffer: the forward transposes
//   the features into it, the backward accumulates the gradient there and transposes it out at the
//   end. The work for one sampling point is then a run over contiguous channels, which vectorises
//   (SSE2, AVX2 or AVX-512, as sam_detr::cpu_isa() selects) without changing any per-channel
//   arithmetic; the (block, PH, PW) slices of output and grad_output are transposed one RoI at a
//   time.
// * A sampling coordinate depends on the bin row and sample row only for y, on the bin column and
//   sample column only for x, so each RoI needs PH * grid_h + PW * grid_w bilinear setups instead
//   of torchvision's per-(channel, bin) recomputation in the backward.
// * Every output element has one writer. In the backward a task visits the RoIs of its image in
//   index order, their bins and samples in torchvision's order, so every gradient element receives
//   the same additions in the same order as in torchvision's serial loop: no atomics, and the
//   result depends neither on the thread count nor on the block size.
// * One parallel region per call: no separate passes to reorder, zero or copy tensors, each of
//   which would wake the threads again.
#include "roi_align/roi_align.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <vector>

#include "cpu_isa.h"

#if SAM_DETR_CPU_X86_VARIANTS
#include <immintrin.h>
#endif

// An FMA rounds once where torchvision rounds twice; keep every multiply and add separate, also in
// the AVX2 / AVX-512 versions (whose ISAs have FMAs).
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

#if SAM_DETR_CPU_X86_VARIANTS
#define SAM_DETR_ALWAYS_INLINE __attribute__((always_inline)) inline
#else
#define SAM_DETR_ALWAYS_INLINE inline
#endif

namespace sam_detr {
namespace {

// Tasks cover at most this many channels, and a block whose (H * W, block) scratch exceeds
// kScratchBytes only when kMinChannelBlock does; the block size does not affect the result.
constexpr int64_t kMaxChannelBlock = 128;
constexpr int64_t kScratchBytes = 1 << 20;  // well inside a core's L2
// Smallest block worth a task of its own: below it the per-RoI setup outweighs the channel work.
constexpr int64_t kMinChannelBlock = 16;
// Elements (RoI x channel x bin, and image x channel x pixel) a thread should have before another
// one is woken: a parallel region costs microseconds, and far more when the other cores are busy.
constexpr int64_t kGrainElements = 32768;

// Where one sampling coordinate falls along one axis of the feature map.
template <typename T>
struct AxisSample {
  int low;
  int high;
  T frac;  // weight of `high` (torchvision's ly / lx)
  T rest;  // weight of `low` (torchvision's hy / hx)
  // the coordinate lies in [-1, size]; a sample with either axis outside reads nothing
  bool inside;
};

template <typename T>
AxisSample<T> axis_sample(T v, int size) {
  AxisSample<T> s{0, 0, T(0), T(0), false};
  // written as !(in range) so that NaN coordinates count as outside
  if (!(v >= -1.0 && v <= size)) {
    return s;
  }
  s.inside = true;
  if (v <= 0) {
    v = 0;
  }
  s.low = static_cast<int>(v);
  if (s.low >= size - 1) {
    s.high = s.low = size - 1;
    v = static_cast<T>(s.low);
  } else {
    s.high = s.low + 1;
  }
  s.frac = v - s.low;
  s.rest = 1. - s.frac;
  return s;
}

// One RoI mapped to the feature map, with torchvision's expressions (types and evaluation order
// included: they decide the last bit of every sampling coordinate).
template <typename T>
struct RoiGeometry {
  int grid_h;  // samples per bin along y; <= 0 leaves the bins empty
  int grid_w;
  T start_h;
  T start_w;
  T bin_h;
  T bin_w;
};

// What every RoI of one call shares.
template <typename T>
struct Problem {
  const T* rois;  // (K, 5)
  int64_t channels;
  int height;
  int width;
  int pooled_h;
  int pooled_w;
  int sampling_ratio;
  bool aligned;
  T spatial_scale;

  int64_t bins() const {
    return static_cast<int64_t>(pooled_h) * pooled_w;
  }
  int64_t pixels() const {
    return static_cast<int64_t>(height) * width;
  }

  RoiGeometry<T> geometry(int64_t k) const {
    const T* roi = rois + k * 5;
    RoiGeometry<T> g;
    const T offset = aligned ? (T)0.5 : (T)0.0;
    g.start_w = roi[1] * spatial_scale - offset;
    g.start_h = roi[2] * spatial_scale - offset;
    const T end_w = roi[3] * spatial_scale - offset;
    const T end_h = roi[4] * spatial_scale - offset;
    T roi_w = end_w - g.start_w;
    T roi_h = end_h - g.start_h;
    if (!aligned) {
      roi_w = std::max(roi_w, (T)1.);
      roi_h = std::max(roi_h, (T)1.);
    }
    g.bin_h = roi_h / static_cast<T>(pooled_h);
    g.bin_w = roi_w / static_cast<T>(pooled_w);
    g.grid_h = sampling_ratio > 0 ? sampling_ratio : adaptive_grid(roi_h, pooled_h);
    g.grid_w = sampling_ratio > 0 ? sampling_ratio : adaptive_grid(roi_w, pooled_w);
    return g;
  }

  // torchvision's ceil(roi_size / pooled) converted to int; a NaN size (a NaN box, on which
  // torchvision's behaviour is undefined) samples nothing
  static int adaptive_grid(T roi_size, int pooled) {
    const T grid = std::ceil(roi_size / pooled);
    return grid == grid ? static_cast<int>(grid) : 0;
  }
};

// Fills out[p * grid + i], the i-th sample of bin p along one axis, for p < pooled, i < grid.
template <typename T>
void axis_samples(T start, T bin, int pooled, int grid, int size, std::vector<AxisSample<T>>& out) {
  out.resize(static_cast<size_t>(pooled) * std::max(grid, 0));
  for (int p = 0; p < pooled; ++p) {
    for (int i = 0; i < grid; ++i) {
      const T v = start + p * bin + static_cast<T>(i + .5f) * bin / static_cast<T>(grid);
      out[p * grid + i] = axis_sample(v, size);
    }
  }
}

// Per-thread scratch, reused across tasks and RoIs.
template <typename T>
struct Workspace {
  std::vector<AxisSample<T>> ys;
  std::vector<AxisSample<T>> xs;
  std::vector<T> image;  // (H * W, block): a task's features or gradient, channels-last
  std::vector<T> roi;  // (bins, block): one RoI's output or grad_output
};

// Channels [c0, c0 + nc) of one image, and the RoIs of that image in index order.
struct Task {
  const int64_t* rois;
  int64_t num_rois;
  int64_t image;
  int64_t c0;
  int64_t nc;
};

// ---- Transposes between the tasks' channels-last scratch, (bins or pixels, block), and the
// tensors' (block, bins or pixels) slices. Square tiles of one vector width go through registers;
// the rest element by element.

#if SAM_DETR_CPU_X86_VARIANTS
// GCC 12 flags the deliberately undefined pass-through operand inside its own AVX-512 intrinsics
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#define SAM_DETR_AVX512 __attribute__((target("avx512f,avx512vl,avx512bw,avx512dq")))
#define SAM_DETR_AVX2 __attribute__((target("avx2")))

SAM_DETR_AVX512 void transpose_tile_avx512(
    const float* src, int64_t ld_src, float* dst, int64_t ld_dst) {
  __m512 r[16], t[16];
  for (int j = 0; j < 16; ++j) {
    r[j] = _mm512_loadu_ps(src + j * ld_src);
  }
  for (int j = 0; j < 8; ++j) {
    t[2 * j] = _mm512_unpacklo_ps(r[2 * j], r[2 * j + 1]);
    t[2 * j + 1] = _mm512_unpackhi_ps(r[2 * j], r[2 * j + 1]);
  }
  for (int j = 0; j < 4; ++j) {
    const __m512d a = _mm512_castps_pd(t[4 * j]), b = _mm512_castps_pd(t[4 * j + 1]);
    const __m512d c = _mm512_castps_pd(t[4 * j + 2]), d = _mm512_castps_pd(t[4 * j + 3]);
    r[4 * j] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, c));
    r[4 * j + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, c));
    r[4 * j + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(b, d));
    r[4 * j + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(b, d));
  }
  for (int j = 0; j < 4; ++j) {
    t[j] = _mm512_shuffle_f32x4(r[j], r[j + 4], 0x88);
    t[j + 4] = _mm512_shuffle_f32x4(r[j], r[j + 4], 0xdd);
    t[j + 8] = _mm512_shuffle_f32x4(r[j + 8], r[j + 12], 0x88);
    t[j + 12] = _mm512_shuffle_f32x4(r[j + 8], r[j + 12], 0xdd);
  }
  for (int j = 0; j < 4; ++j) {
    r[j] = _mm512_shuffle_f32x4(t[j], t[j + 8], 0x88);
    r[j + 4] = _mm512_shuffle_f32x4(t[j + 4], t[j + 12], 0x88);
    r[j + 8] = _mm512_shuffle_f32x4(t[j], t[j + 8], 0xdd);
    r[j + 12] = _mm512_shuffle_f32x4(t[j + 4], t[j + 12], 0xdd);
  }
  for (int j = 0; j < 16; ++j) {
    _mm512_storeu_ps(dst + j * ld_dst, r[j]);
  }
}

SAM_DETR_AVX512 void transpose_tile_avx512(
    const double* src, int64_t ld_src, double* dst, int64_t ld_dst) {
  __m512d r[8], t[8];
  for (int j = 0; j < 8; ++j) {
    r[j] = _mm512_loadu_pd(src + j * ld_src);
  }
  for (int j = 0; j < 4; ++j) {
    t[2 * j] = _mm512_unpacklo_pd(r[2 * j], r[2 * j + 1]);
    t[2 * j + 1] = _mm512_unpackhi_pd(r[2 * j], r[2 * j + 1]);
  }
  for (int j = 0; j < 2; ++j) {
    r[4 * j] = _mm512_shuffle_f64x2(t[4 * j], t[4 * j + 2], 0x88);
    r[4 * j + 1] = _mm512_shuffle_f64x2(t[4 * j], t[4 * j + 2], 0xdd);
    r[4 * j + 2] = _mm512_shuffle_f64x2(t[4 * j + 1], t[4 * j + 3], 0x88);
    r[4 * j + 3] = _mm512_shuffle_f64x2(t[4 * j + 1], t[4 * j + 3], 0xdd);
  }
  _mm512_storeu_pd(dst, _mm512_shuffle_f64x2(r[0], r[4], 0x88));
  _mm512_storeu_pd(dst + ld_dst, _mm512_shuffle_f64x2(r[2], r[6], 0x88));
  _mm512_storeu_pd(dst + 2 * ld_dst, _mm512_shuffle_f64x2(r[1], r[5], 0x88));
  _mm512_storeu_pd(dst + 3 * ld_dst, _mm512_shuffle_f64x2(r[3], r[7], 0x88));
  _mm512_storeu_pd(dst + 4 * ld_dst, _mm512_shuffle_f64x2(r[0], r[4], 0xdd));
  _mm512_storeu_pd(dst + 5 * ld_dst, _mm512_shuffle_f64x2(r[2], r[6], 0xdd));
  _mm512_storeu_pd(dst + 6 * ld_dst, _mm512_shuffle_f64x2(r[1], r[5], 0xdd));
  _mm512_storeu_pd(dst + 7 * ld_dst, _mm512_shuffle_f64x2(r[3], r[7], 0xdd));
}

SAM_DETR_AVX2 void transpose_tile_avx2(
    const float* src, int64_t ld_src, float* dst, int64_t ld_dst) {
  __m256 r[8], t[8];
  for (int j = 0; j < 8; ++j) {
    r[j] = _mm256_loadu_ps(src + j * ld_src);
  }
  for (int j = 0; j < 4; ++j) {
    t[2 * j] = _mm256_unpacklo_ps(r[2 * j], r[2 * j + 1]);
    t[2 * j + 1] = _mm256_unpackhi_ps(r[2 * j], r[2 * j + 1]);
  }
  for (int j = 0; j < 2; ++j) {
    r[4 * j] = _mm256_shuffle_ps(t[4 * j], t[4 * j + 2], _MM_SHUFFLE(1, 0, 1, 0));
    r[4 * j + 1] = _mm256_shuffle_ps(t[4 * j], t[4 * j + 2], _MM_SHUFFLE(3, 2, 3, 2));
    r[4 * j + 2] = _mm256_shuffle_ps(t[4 * j + 1], t[4 * j + 3], _MM_SHUFFLE(1, 0, 1, 0));
    r[4 * j + 3] = _mm256_shuffle_ps(t[4 * j + 1], t[4 * j + 3], _MM_SHUFFLE(3, 2, 3, 2));
  }
  for (int j = 0; j < 4; ++j) {
    _mm256_storeu_ps(dst + j * ld_dst, _mm256_permute2f128_ps(r[j], r[j + 4], 0x20));
    _mm256_storeu_ps(dst + (j + 4) * ld_dst, _mm256_permute2f128_ps(r[j], r[j + 4], 0x31));
  }
}

SAM_DETR_AVX2 void transpose_tile_avx2(
    const double* src, int64_t ld_src, double* dst, int64_t ld_dst) {
  const __m256d r0 = _mm256_loadu_pd(src), r1 = _mm256_loadu_pd(src + ld_src);
  const __m256d r2 = _mm256_loadu_pd(src + 2 * ld_src), r3 = _mm256_loadu_pd(src + 3 * ld_src);
  const __m256d t0 = _mm256_unpacklo_pd(r0, r1), t1 = _mm256_unpackhi_pd(r0, r1);
  const __m256d t2 = _mm256_unpacklo_pd(r2, r3), t3 = _mm256_unpackhi_pd(r2, r3);
  _mm256_storeu_pd(dst, _mm256_permute2f128_pd(t0, t2, 0x20));
  _mm256_storeu_pd(dst + ld_dst, _mm256_permute2f128_pd(t1, t3, 0x20));
  _mm256_storeu_pd(dst + 2 * ld_dst, _mm256_permute2f128_pd(t0, t2, 0x31));
  _mm256_storeu_pd(dst + 3 * ld_dst, _mm256_permute2f128_pd(t1, t3, 0x31));
}
#pragma GCC diagnostic pop
#endif  // SAM_DETR_CPU_X86_VARIANTS

// Side of the register tiles: one vector of T; the default variant's scalar tiles only block for
// the cache.
template <CpuIsa isa, typename T>
constexpr int64_t tile_size() {
  return isa == CpuIsa::kAvx512 ? 64 / sizeof(T) : isa == CpuIsa::kAvx2 ? 32 / sizeof(T) : 8;
}

// dst[c * ld_dst + r] = src[r * ld_src + c] for r < rows, c < cols.
template <CpuIsa isa, typename T>
SAM_DETR_ALWAYS_INLINE void transpose(
    const T* src, int64_t rows, int64_t cols, int64_t ld_src, T* dst, int64_t ld_dst) {
  constexpr int64_t kTile = tile_size<isa, T>();
  const auto scalar = [&](int64_t r0, int64_t r1, int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      for (int64_t r = r0; r < r1; ++r) {
        dst[c * ld_dst + r] = src[r * ld_src + c];
      }
    }
  };
  const int64_t full_rows = rows - rows % kTile;
  const int64_t full_cols = cols - cols % kTile;
  for (int64_t r0 = 0; r0 < full_rows; r0 += kTile) {
    for (int64_t c0 = 0; c0 < full_cols; c0 += kTile) {
      const T* s = src + r0 * ld_src + c0;
      T* d = dst + c0 * ld_dst + r0;
#if SAM_DETR_CPU_X86_VARIANTS
      if constexpr (isa == CpuIsa::kAvx512) {
        transpose_tile_avx512(s, ld_src, d, ld_dst);
        continue;
      } else if constexpr (isa == CpuIsa::kAvx2) {
        transpose_tile_avx2(s, ld_src, d, ld_dst);
        continue;
      }
#endif
      scalar(r0, r0 + kTile, c0, c0 + kTile);
    }
    scalar(r0, r0 + kTile, full_cols, cols);
  }
  scalar(full_rows, rows, 0, cols);
}

// acc[c] += w1 * r1[c] + w2 * r2[c] + w3 * r3[c] + w4 * r4[c], torchvision's sum order per channel.
template <typename T>
SAM_DETR_ALWAYS_INLINE void accumulate_sample(
    T* __restrict__ acc,
    const T* r1,
    const T* r2,
    const T* r3,
    const T* r4,
    T w1,
    T w2,
    T w3,
    T w4,
    int64_t n) {
  for (int64_t c = 0; c < n; ++c) {
    acc[c] += w1 * r1[c] + w2 * r2[c] + w3 * r3[c] + w4 * r4[c];
  }
}

// dst[c] += grad[c] * w / count, torchvision's gradient of one corner. With a power-of-two count
// the division equals the product with the (exact) reciprocal, bit for bit: both round the same
// real number once.
template <typename T, bool kPow2Count>
SAM_DETR_ALWAYS_INLINE void scatter_corner(
    T* __restrict__ dst, const T* __restrict__ grad, T w, T count, T inv_count, int64_t n) {
  if (kPow2Count) {
    for (int64_t c = 0; c < n; ++c) {
      dst[c] += grad[c] * w * inv_count;
    }
  } else {
    for (int64_t c = 0; c < n; ++c) {
      dst[c] += grad[c] * w / count;
    }
  }
}

// output[k, c0:c0 + nc] for the task's RoIs k. input is (N, C, H, W), contiguous in that order or
// channels-last.
template <CpuIsa isa, typename T>
SAM_DETR_ALWAYS_INLINE void forward_task_impl(
    const Problem<T>& p,
    const T* input,
    bool channels_last,
    const Task& t,
    Workspace<T>& ws,
    T* output) {  // (K, C, PH, PW)
  if (t.num_rois == 0) {
    return;
  }
  const int64_t nc = t.nc;
  const int64_t bins = p.bins();
  const int64_t pixels = p.pixels();
  ws.image.resize(pixels * nc);
  T* image = ws.image.data();
  if (channels_last) {
    const T* src = input + t.image * pixels * p.channels + t.c0;
    for (int64_t i = 0; i < pixels; ++i) {
      std::copy(src + i * p.channels, src + i * p.channels + nc, image + i * nc);
    }
  } else {
    transpose<isa>(input + (t.image * p.channels + t.c0) * pixels, nc, pixels, pixels, image, nc);
  }
  const int64_t row_stride = p.width * nc;
  ws.roi.resize(bins * nc);
  for (int64_t j = 0; j < t.num_rois; ++j) {
    const int64_t k = t.rois[j];
    const RoiGeometry<T> g = p.geometry(k);
    axis_samples(g.start_h, g.bin_h, p.pooled_h, g.grid_h, p.height, ws.ys);
    axis_samples(g.start_w, g.bin_w, p.pooled_w, g.grid_w, p.width, ws.xs);
    const int samples = std::max(g.grid_h * g.grid_w, 1);
    const T count = samples;
    // dividing by a power of two and multiplying by its reciprocal round the same real number
    const bool pow2_count = (samples & (samples - 1)) == 0;
    const T inv_count = T(1) / count;
    for (int ph = 0; ph < p.pooled_h; ++ph) {
      for (int pw = 0; pw < p.pooled_w; ++pw) {
        T* acc = ws.roi.data() + (ph * p.pooled_w + pw) * nc;
        std::fill(acc, acc + nc, T(0));
        for (int iy = 0; iy < g.grid_h; ++iy) {
          const AxisSample<T>& sy = ws.ys[ph * g.grid_h + iy];
          const T* row_low = image + sy.low * row_stride;
          const T* row_high = image + sy.high * row_stride;
          for (int ix = 0; ix < g.grid_w; ++ix) {
            const AxisSample<T>& sx = ws.xs[pw * g.grid_w + ix];
            if (sy.inside && sx.inside) {
              accumulate_sample(
                  acc, row_low + sx.low * nc, row_low + sx.high * nc, row_high + sx.low * nc,
                  row_high + sx.high * nc, sy.rest * sx.rest, sy.rest * sx.frac, sy.frac * sx.rest,
                  sy.frac * sx.frac, nc);
            } else {
              // torchvision adds 0 * pixel (0, 0) here, which matters when it is inf or NaN
              accumulate_sample(acc, image, image, image, image, T(0), T(0), T(0), T(0), nc);
            }
          }
        }
        if (pow2_count) {
          for (int64_t c = 0; c < nc; ++c) {
            acc[c] *= inv_count;
          }
        } else {
          for (int64_t c = 0; c < nc; ++c) {
            acc[c] /= count;
          }
        }
      }
    }
    transpose<isa>(ws.roi.data(), bins, nc, nc, output + (k * p.channels + t.c0) * bins, bins);
  }
}

// Adds RoI k's gradient to a task's (H * W, nc) gradient scratch.
template <typename T, bool kPow2Count>
SAM_DETR_ALWAYS_INLINE void backward_roi(
    const Problem<T>& p,
    const RoiGeometry<T>& g,
    const Workspace<T>& ws,
    const T* grad_by_bin,  // (bins, nc)
    int64_t nc,
    T* image) {
  const T count = g.grid_h * g.grid_w;
  const T inv_count = T(1) / count;
  const int64_t row_stride = p.width * nc;
  for (int ph = 0; ph < p.pooled_h; ++ph) {
    for (int pw = 0; pw < p.pooled_w; ++pw) {
      const T* grad = grad_by_bin + (ph * p.pooled_w + pw) * nc;
      for (int iy = 0; iy < g.grid_h; ++iy) {
        const AxisSample<T>& sy = ws.ys[ph * g.grid_h + iy];
        if (!sy.inside) {
          continue;
        }
        T* row_low = image + sy.low * row_stride;
        T* row_high = image + sy.high * row_stride;
        for (int ix = 0; ix < g.grid_w; ++ix) {
          const AxisSample<T>& sx = ws.xs[pw * g.grid_w + ix];
          if (!sx.inside) {
            continue;
          }
          // one corner at a time: corners clamped onto the same pixel add in torchvision's order
          scatter_corner<T, kPow2Count>(
              row_low + sx.low * nc, grad, sy.rest * sx.rest, count, inv_count, nc);
          scatter_corner<T, kPow2Count>(
              row_low + sx.high * nc, grad, sy.rest * sx.frac, count, inv_count, nc);
          scatter_corner<T, kPow2Count>(
              row_high + sx.low * nc, grad, sy.frac * sx.rest, count, inv_count, nc);
          scatter_corner<T, kPow2Count>(
              row_high + sx.high * nc, grad, sy.frac * sx.frac, count, inv_count, nc);
        }
      }
    }
  }
}

// grad_input[image, c0:c0 + nc], from the task's RoIs in index order. grad_input is (N, C, H, W),
// contiguous in that order or channels-last.
template <CpuIsa isa, typename T>
SAM_DETR_ALWAYS_INLINE void backward_task_impl(
    const Problem<T>& p,
    const T* grad_output,  // (K, C, PH, PW)
    bool channels_last,
    const Task& t,
    Workspace<T>& ws,
    T* grad_input) {
  const int64_t nc = t.nc;
  const int64_t bins = p.bins();
  const int64_t pixels = p.pixels();
  ws.image.assign(pixels * nc, T(0));
  T* image = ws.image.data();
  ws.roi.resize(bins * nc);
  for (int64_t j = 0; j < t.num_rois; ++j) {
    const int64_t k = t.rois[j];
    const RoiGeometry<T> g = p.geometry(k);
    if (g.grid_h <= 0 || g.grid_w <= 0) {
      continue;  // torchvision's sample loops are empty
    }
    axis_samples(g.start_h, g.bin_h, p.pooled_h, g.grid_h, p.height, ws.ys);
    axis_samples(g.start_w, g.bin_w, p.pooled_w, g.grid_w, p.width, ws.xs);
    transpose<isa>(grad_output + (k * p.channels + t.c0) * bins, nc, bins, bins, ws.roi.data(), nc);
    const int count = g.grid_h * g.grid_w;
    if ((count & (count - 1)) == 0) {
      backward_roi<T, true>(p, g, ws, ws.roi.data(), nc, image);
    } else {
      backward_roi<T, false>(p, g, ws, ws.roi.data(), nc, image);
    }
  }
  if (channels_last) {
    T* dst = grad_input + t.image * pixels * p.channels + t.c0;
    for (int64_t i = 0; i < pixels; ++i) {
      std::copy(image + i * nc, image + (i + 1) * nc, dst + i * p.channels);
    }
  } else {
    T* dst = grad_input + (t.image * p.channels + t.c0) * pixels;
    transpose<isa>(image, pixels, nc, nc, dst, pixels);
  }
}

// The same kernels compiled for each instruction set; cpu_isa() picks one per call.
#define SAM_DETR_ROI_ALIGN_VARIANTS(SUFFIX, ISA, TARGET)                                        \
  template <typename T>                                                                        \
  TARGET void forward_task_##SUFFIX(                                                           \
      const Problem<T>& p, const T* input, bool channels_last, const Task& t, Workspace<T>& ws, \
      T* output) {                                                                             \
    forward_task_impl<ISA>(p, input, channels_last, t, ws, output);                            \
  }                                                                                            \
  template <typename T>                                                                        \
  TARGET void backward_task_##SUFFIX(                                                          \
      const Problem<T>& p, const T* grad_output, bool channels_last, const Task& t,            \
      Workspace<T>& ws, T* grad_input) {                                                       \
    backward_task_impl<ISA>(p, grad_output, channels_last, t, ws, grad_input);                 \
  }

SAM_DETR_ROI_ALIGN_VARIANTS(default, CpuIsa::kDefault, )
#if SAM_DETR_CPU_X86_VARIANTS
SAM_DETR_ROI_ALIGN_VARIANTS(avx2, CpuIsa::kAvx2, SAM_DETR_AVX2)
SAM_DETR_ROI_ALIGN_VARIANTS(avx512, CpuIsa::kAvx512, SAM_DETR_AVX512)
#endif
#undef SAM_DETR_ROI_ALIGN_VARIANTS

// Runs body(begin, end, workspace) over [0, n) in chunks of `grain` handed out on demand: a thread
// that the OS deschedules (other processes, data-loader workers) then delays the call by one chunk
// rather than by a static share of the range. Every index is processed exactly once, by one thread.
template <typename T, typename F>
void parallel_chunks(int64_t n, int64_t grain, const F& body) {
  const int64_t chunks = (n + grain - 1) / grain;
  std::atomic<int64_t> next{0};
  at::parallel_for(0, chunks, 1, [&](int64_t, int64_t) {
    Workspace<T> ws;
    for (int64_t c = next.fetch_add(1, std::memory_order_relaxed); c < chunks;
         c = next.fetch_add(1, std::memory_order_relaxed)) {
      body(c * grain, std::min(n, (c + 1) * grain), ws);
    }
  });
}

// RoI indices grouped by image, ascending within an image (a stable counting sort).
struct RoiGroups {
  std::vector<int64_t> order;  // (K,)
  std::vector<int64_t> begin;  // (N + 1,) offsets of each image's group in `order`
};

RoiGroups group_by_image(const std::vector<int64_t>& batch, int64_t batch_size) {
  RoiGroups groups{std::vector<int64_t>(batch.size()), std::vector<int64_t>(batch_size + 1, 0)};
  for (int64_t b : batch) {
    ++groups.begin[b + 1];
  }
  for (int64_t b = 0; b < batch_size; ++b) {
    groups.begin[b + 1] += groups.begin[b];
  }
  std::vector<int64_t> next(groups.begin.begin(), groups.begin.end() - 1);
  for (size_t k = 0; k < batch.size(); ++k) {
    groups.order[next[batch[k]]++] = static_cast<int64_t>(k);
  }
  return groups;
}

// Channel block of the tasks: as large as the scratch budget allows, then halved until every
// thread has two tasks (so that one can make up for another delayed), but not below
// kMinChannelBlock.
template <typename T>
int64_t channel_block(int64_t batch_size, int64_t channels, int64_t pixels) {
  const int64_t fits = kScratchBytes / (pixels * static_cast<int64_t>(sizeof(T)));
  int64_t block = std::min({channels, kMaxChannelBlock, std::max(fits, kMinChannelBlock)});
  const int64_t threads = at::get_num_threads();
  while (block > kMinChannelBlock && batch_size * ((channels + block - 1) / block) < 2 * threads) {
    block = (block + 1) / 2;
  }
  return block;
}

// Calls body(task, workspace) for every (image, channel block) of the problem, in parallel.
template <typename T, typename F>
void for_each_task(const Problem<T>& p, const RoiGroups& groups, const F& body) {
  const int64_t batch_size = static_cast<int64_t>(groups.begin.size()) - 1;
  const int64_t block = channel_block<T>(batch_size, p.channels, p.pixels());
  const int64_t blocks_per_image = (p.channels + block - 1) / block;
  const int64_t tasks = batch_size * blocks_per_image;
  const int64_t work =
      (static_cast<int64_t>(groups.order.size()) * p.bins() + batch_size * p.pixels()) * p.channels;
  const int64_t grain = std::max<int64_t>(1, tasks * kGrainElements / std::max<int64_t>(1, work));
  parallel_chunks<T>(tasks, grain, [&](int64_t begin, int64_t end, Workspace<T>& ws) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / blocks_per_image;
      const int64_t c0 = (task % blocks_per_image) * block;
      const Task t{
          groups.order.data() + groups.begin[b], groups.begin[b + 1] - groups.begin[b], b, c0,
          std::min(block, p.channels - c0)};
      body(t, ws);
    }
  });
}

template <typename T>
void forward_kernel(
    const Problem<T>& p, const RoiGroups& groups, const T* input, bool channels_last, T* output) {
  const CpuIsa isa = cpu_isa();
  for_each_task(p, groups, [&](const Task& t, Workspace<T>& ws) {
    switch (isa) {
#if SAM_DETR_CPU_X86_VARIANTS
      case CpuIsa::kAvx512:
        forward_task_avx512(p, input, channels_last, t, ws, output);
        break;
      case CpuIsa::kAvx2:
        forward_task_avx2(p, input, channels_last, t, ws, output);
        break;
#endif
      default:
        forward_task_default(p, input, channels_last, t, ws, output);
    }
  });
}

template <typename T>
void backward_kernel(
    const Problem<T>& p,
    const RoiGroups& groups,
    const T* grad_output,
    bool channels_last,
    T* grad_input) {
  const CpuIsa isa = cpu_isa();
  for_each_task(p, groups, [&](const Task& t, Workspace<T>& ws) {
    switch (isa) {
#if SAM_DETR_CPU_X86_VARIANTS
      case CpuIsa::kAvx512:
        backward_task_avx512(p, grad_output, channels_last, t, ws, grad_input);
        break;
      case CpuIsa::kAvx2:
        backward_task_avx2(p, grad_output, channels_last, t, ws, grad_input);
        break;
#endif
      default:
        backward_task_default(p, grad_output, channels_last, t, ws, grad_input);
    }
  });
}

void check_rois(const at::Tensor& rois, const at::Tensor& like, const char* like_name) {
  TORCH_CHECK(
      rois.dim() == 2 && rois.size(1) == 5, "roi_align: rois must have shape (K, 5), got ",
      rois.sizes());
  TORCH_CHECK(
      rois.scalar_type() == like.scalar_type(), "roi_align: rois (", rois.scalar_type(),
      ") must have the dtype of ", like_name, " (", like.scalar_type(), ")");
}

// Batch index of every RoI, truncated as torchvision does, and checked: torchvision reads out of
// bounds on a bad one.
template <typename T>
std::vector<int64_t> roi_batch_indices(const T* rois, int64_t num_rois, int64_t batch_size) {
  std::vector<int64_t> batch(num_rois);
  for (int64_t k = 0; k < num_rois; ++k) {
    const T b = rois[k * 5];
    TORCH_CHECK(
        b > -1 && b < batch_size, "roi_align: rois[", k, ", 0] = ", b,
        " is not a batch index in [0, ", batch_size, ")");
    batch[k] = static_cast<int64_t>(b);
  }
  return batch;
}

template <typename T>
Problem<T> make_problem(
    const T* rois,
    int64_t channels,
    int64_t height,
    int64_t width,
    int64_t pooled_height,
    int64_t pooled_width,
    int64_t sampling_ratio,
    bool aligned,
    double spatial_scale) {
  return Problem<T>{
      rois,
      channels,
      static_cast<int>(height),
      static_cast<int>(width),
      static_cast<int>(pooled_height),
      static_cast<int>(pooled_width),
      static_cast<int>(sampling_ratio),
      aligned,
      static_cast<T>(spatial_scale)};
}

}  // namespace

at::Tensor roi_align_forward_cpu(
    const at::Tensor& input,
    const at::Tensor& rois,
    double spatial_scale,
    int64_t pooled_height,
    int64_t pooled_width,
    int64_t sampling_ratio,
    bool aligned) {
  TORCH_CHECK(
      input.dim() == 4, "roi_align: input must have shape (N, C, H, W), got ", input.sizes());
  TORCH_CHECK(
      input.scalar_type() == at::kFloat || input.scalar_type() == at::kDouble,
      "roi_align: input must be float32 or float64, got ", input.scalar_type());
  check_rois(rois, input, "input");
  TORCH_CHECK(
      pooled_height > 0 && pooled_width > 0, "roi_align: output_size must be positive, got (",
      pooled_height, ", ", pooled_width, ")");
  const int64_t num_rois = rois.size(0);
  const int64_t channels = input.size(1);
  // every element is written by exactly one task
  at::Tensor output = at::empty({num_rois, channels, pooled_height, pooled_width}, input.options());
  if (output.numel() == 0) {
    return output;
  }
  TORCH_CHECK(
      input.size(2) > 0 && input.size(3) > 0,
      "roi_align: input must have a non-empty feature map, got ", input.sizes());
  // channels-last inputs are read as they are; anything else is made contiguous
  const bool channels_last =
      !input.is_contiguous() && input.is_contiguous(at::MemoryFormat::ChannelsLast);
  const at::Tensor input_c = channels_last ? input : input.contiguous();
  const at::Tensor rois_c = rois.contiguous();
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "roi_align_forward_cpu", [&] {
    const scalar_t* rois_data = rois_c.data_ptr<scalar_t>();
    const std::vector<int64_t> batch = roi_batch_indices(rois_data, num_rois, input.size(0));
    const Problem<scalar_t> problem = make_problem(
        rois_data, channels, input.size(2), input.size(3), pooled_height, pooled_width,
        sampling_ratio, aligned, spatial_scale);
    forward_kernel(
        problem, group_by_image(batch, input.size(0)), input_c.data_ptr<scalar_t>(), channels_last,
        output.data_ptr<scalar_t>());
  });
  return output;
}

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
    bool channels_last) {
  TORCH_CHECK(
      grad_output.scalar_type() == at::kFloat || grad_output.scalar_type() == at::kDouble,
      "roi_align: grad_output must be float32 or float64, got ", grad_output.scalar_type());
  check_rois(rois, grad_output, "grad_output");
  const int64_t num_rois = rois.size(0);
  TORCH_CHECK(
      grad_output.dim() == 4 && grad_output.size(0) == num_rois &&
          grad_output.size(1) == channels && grad_output.size(2) == pooled_height &&
          grad_output.size(3) == pooled_width,
      "roi_align: grad_output must have shape (", num_rois, ", ", channels, ", ", pooled_height,
      ", ", pooled_width, "), got ", grad_output.sizes());
  const auto options = grad_output.options().memory_format(
      channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous);
  if (grad_output.numel() == 0 || height * width == 0) {
    return at::zeros({batch_size, channels, height, width}, options);
  }
  // every element is written by exactly one task, zeros included
  at::Tensor grad_input = at::empty({batch_size, channels, height, width}, options);
  const at::Tensor grad_c = grad_output.contiguous();
  const at::Tensor rois_c = rois.contiguous();
  AT_DISPATCH_FLOATING_TYPES(grad_output.scalar_type(), "roi_align_backward_cpu", [&] {
    const scalar_t* rois_data = rois_c.data_ptr<scalar_t>();
    const std::vector<int64_t> batch = roi_batch_indices(rois_data, num_rois, batch_size);
    const Problem<scalar_t> problem = make_problem(
        rois_data, channels, height, width, pooled_height, pooled_width, sampling_ratio, aligned,
        spatial_scale);
    backward_kernel(
        problem, group_by_image(batch, batch_size), grad_c.data_ptr<scalar_t>(), channels_last,
        grad_input.data_ptr<scalar_t>());
  });
  return grad_input;
}

}  // namespace sam_detr
