// CPU kernels of multi-scale deformable attention, written once and compiled per instruction set.
//
// Included only by ms_deform_attn_cpu_isa_<isa>.cpp, after ms_deform_attn_cpu.h, after defining
// SAM_DETR_MSDA_VEC_BYTES (the native vector width: 16, 32 or 64) and, for the x86 variants, after
// `#pragma GCC target(...)`. It includes nothing itself and everything in it has internal linkage, so
// no function compiled for AVX2/AVX-512 can be picked by the linker for a caller on a CPU without it.
// Vectors are GCC vector extensions of the native width (wider ones would be split and spilled); the
// compiler contracts a * b + c into FMA where the target has it.
//
// Layout: value (N, S, M, D) channels-last, so each bilinear corner of head m is a contiguous D-vector
// at stride M * D between spatial positions; the kernels vectorise over those D channels.

// Everything here is inlined into functions of internal linkage, so the vector calling convention
// that -Wpsabi warns about never crosses a translation unit.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpsabi"

namespace sam_detr {
namespace ms_deform_attn_cpu {
namespace {

constexpr int kVecBytes = SAM_DETR_MSDA_VEC_BYTES;
static_assert(kBlockBytes % kVecBytes == 0, "a block must be a whole number of vectors");

template <typename T, int Bytes>
struct VecOf {
  typedef T Type __attribute__((vector_size(Bytes)));
};

template <typename T>
using Vec = typename VecOf<T, kVecBytes>::Type;

template <typename T>
constexpr int kLanes = kVecBytes / sizeof(T);

template <typename T>
inline Vec<T> load(const T* p) {
  Vec<T> v;
  __builtin_memcpy(&v, p, sizeof(v));
  return v;
}

// First n < kLanes lanes from p, the others zero (the tail of a channel row, never read past).
template <typename T>
inline Vec<T> load_partial(const T* p, int64_t n) {
  Vec<T> v = {};
  __builtin_memcpy(&v, p, n * sizeof(T));
  return v;
}

template <typename T>
inline void store(T* p, const Vec<T>& v) {
  __builtin_memcpy(p, &v, sizeof(v));
}

template <typename T>
inline void store_partial(T* p, const Vec<T>& v, int64_t n) {
  __builtin_memcpy(p, &v, n * sizeof(T));
}

// Sum of the lanes, halving the vector each step: log-depth and a fixed order.
template <typename T, int Bytes>
inline T hsum(const typename VecOf<T, Bytes>::Type& v) {
  if constexpr (Bytes == 2 * sizeof(T)) {
    return v[0] + v[1];
  } else {
    typedef typename VecOf<T, Bytes / 2>::Type Half;
    Half lo, hi;
    __builtin_memcpy(&lo, &v, sizeof(Half));
    __builtin_memcpy(&hi, reinterpret_cast<const char*>(&v) + sizeof(Half), sizeof(Half));
    return hsum<T, Bytes / 2>(lo + hi);
  }
}

// Pixel coordinates of a normalised location: (x * W - 0.5, y * H - 0.5), as grid_sample with
// align_corners=False. Calls emit(offset, w, dw, dh) for each bilinear corner inside the level, in a
// fixed order, with its row offset in value (relative to the (n, m) slice, rows of row_stride), its
// weight and the weight's derivatives w.r.t. the pixel coordinates (w_im, h_im). Points outside
// (-1, W) x (-1, H) have no corner inside and are skipped whole (the official kernel's test; it also
// rejects NaN before the float-to-int conversion).
template <typename T, typename Emit>
inline void for_each_corner(T x, T y, int64_t H, int64_t W, int64_t level_start, int64_t row_stride, Emit emit) {
  const T w_im = x * static_cast<T>(W) - static_cast<T>(0.5);
  const T h_im = y * static_cast<T>(H) - static_cast<T>(0.5);
  if (!(h_im > -1 && w_im > -1 && h_im < static_cast<T>(H) && w_im < static_cast<T>(W))) return;
  // floor, exact here because the coordinates are within (-1, H) and (-1, W)
  int64_t h0 = static_cast<int64_t>(h_im);
  if (h_im < static_cast<T>(h0)) --h0;
  int64_t w0 = static_cast<int64_t>(w_im);
  if (w_im < static_cast<T>(w0)) --w0;
  const T lh = h_im - static_cast<T>(h0), lw = w_im - static_cast<T>(w0);
  const T hh = 1 - lh, hw = 1 - lw;
  const int64_t row0 = (level_start + h0 * W + w0) * row_stride;
  const bool top = h0 >= 0, bottom = h0 + 1 < H, left = w0 >= 0, right = w0 + 1 < W;
  if (top && left) emit(row0, hh * hw, -hh, -hw);
  if (top && right) emit(row0 + row_stride, hh * lw, hh, -lw);
  if (bottom && left) emit(row0 + W * row_stride, lh * hw, -lh, hw);
  if (bottom && right) emit(row0 + (W + 1) * row_stride, lh * lw, lh, lw);
}

// Asks for the first block of a corner's channels (at most kBlockBytes) ahead of its use: corners of
// neighbouring queries overlap, but the levels' bands of rows exceed L2 at the encoder shapes.
template <typename T>
inline void prefetch_row(const T* row, int64_t channels) {
  const int64_t bytes = channels * static_cast<int64_t>(sizeof(T));
  for (int64_t b = 0; b < bytes && b < kBlockBytes; b += 64) __builtin_prefetch(reinterpret_cast<const char*>(row) + b);
}

// ---------------------------------------------------------------------------------------------------
// Forward

// out[0, K lanes) = sum_k corner[k].weight * value[corner[k].offset + (0, K lanes)], accumulated in K
// registers over all corners before a single store.
template <typename T, int K>
inline void gather(const T* __restrict value, const Corner<T>* corners, int64_t n, T* __restrict out) {
  Vec<T> acc[K];
  for (int j = 0; j < K; ++j) acc[j] = Vec<T>{};
  for (int64_t k = 0; k < n; ++k) {
    const T* v = value + corners[k].offset;
    const T weight = corners[k].weight;
    for (int j = 0; j < K; ++j) acc[j] += weight * load(v + j * kLanes<T>);
  }
  for (int j = 0; j < K; ++j) store(out + j * kLanes<T>, acc[j]);
}

template <typename T>
inline void gather_partial(const T* __restrict value, const Corner<T>* corners, int64_t n, T* __restrict out,
                           int64_t channels) {
  Vec<T> acc = {};
  for (int64_t k = 0; k < n; ++k) acc += corners[k].weight * load_partial(value + corners[k].offset, channels);
  store_partial(out, acc, channels);
}

// Query rows [begin, end) of the flattened (N * Lq). For each query the corners of all heads are
// listed (and prefetched) first, then each head's channels are accumulated, so the loads of the last
// heads are in flight while the first ones are summed. corners holds M * 4 * L * P entries.
template <typename T>
void forward(const ForwardArgs<T>& a, int64_t begin, int64_t end, Corner<T>* corners, int64_t* counts) {
  const Sizes& s = a.sz;
  constexpr int kVecsPerBlock = kBlockBytes / kVecBytes;
  constexpr int64_t kBlock = kBlockBytes / sizeof(T);
  const int64_t MD = s.M * s.D;
  const int64_t per_head = 4 * s.L * s.P;
  for (int64_t nq = begin; nq < end; ++nq) {
    const T* value_n = a.value + nq / s.Lq * s.S * MD;
    for (int64_t m = 0; m < s.M; ++m) {
      const int64_t qm = nq * s.M + m;
      const T* loc = a.sampling_loc + qm * s.L * s.P * 2;
      const T* attn = a.attn_weight + qm * s.L * s.P;
      const T* value = value_n + m * s.D;
      Corner<T>* list = corners + m * per_head;
      int64_t n = 0;
      for (int64_t l = 0; l < s.L; ++l) {
        const int64_t H = a.spatial_shapes[2 * l], W = a.spatial_shapes[2 * l + 1];
        for (int64_t p = 0; p < s.P; ++p) {
          const int64_t i = l * s.P + p;
          const T weight = attn[i];
          for_each_corner(loc[2 * i], loc[2 * i + 1], H, W, a.level_start_index[l], MD,
                          [&](int64_t offset, T w, T, T) {
                            prefetch_row(value + offset, s.D);
                            list[n++] = Corner<T>{offset, weight * w};
                          });
        }
      }
      counts[m] = n;
    }
    for (int64_t m = 0; m < s.M; ++m) {
      const T* value = value_n + m * s.D;
      const Corner<T>* list = corners + m * per_head;
      T* out = a.output + (nq * s.M + m) * s.D;
      int64_t ch = 0;
      for (; ch + kBlock <= s.D; ch += kBlock) gather<T, kVecsPerBlock>(value + ch, list, counts[m], out + ch);
      for (; ch + kLanes<T> <= s.D; ch += kLanes<T>) gather<T, 1>(value + ch, list, counts[m], out + ch);
      if (ch < s.D) gather_partial(value + ch, list, counts[m], out + ch, s.D - ch);
    }
  }
}

// ---------------------------------------------------------------------------------------------------
// Backward
//
// For one sampling point with attention weight a, upstream gradient g and inside corners c (value
// rows v_c, bilinear weights w_c and their derivatives dw_c, dh_c w.r.t. the pixel coordinates):
//   grad_value[c] += a * w_c * g
//   grad_attn      = sum_c w_c <g, v_c>
//   grad_loc       = (a * W * sum_c dw_c <g, v_c>,  a * H * sum_c dh_c <g, v_c>)
// The dot products <g, v_c> are accumulated lane-wise over the channels and summed across lanes once.

// One vector of channels; ld / st load and store a full or a partial (tail) vector.
template <typename T, typename Load, typename Store>
inline void backward_vector(const T* __restrict value, T* __restrict grad_value, const T* __restrict g_ptr,
                            const PointCorners<T>& b, T attn, Vec<T>* dots, Load ld, Store st) {
  const Vec<T> g = ld(g_ptr);
  // a fixed trip count keeps dots[] in registers
  for (int c = 0; c < 4; ++c) {
    if (c >= b.n) break;
    dots[c] += g * ld(value + b.offset[c]);
    T* gv = grad_value + b.offset[c];
    st(gv, ld(gv) + (attn * b.w[c]) * g);
  }
}

// Channels [c0, c1) of head chunk `chunk`: whole blocks, split evenly over the chunks.
template <typename T>
inline void chunk_channels(int64_t D, int64_t num_chunks, int64_t chunk, int64_t* c0, int64_t* c1) {
  constexpr int64_t kBlock = kBlockBytes / sizeof(T);
  const int64_t blocks = (D + kBlock - 1) / kBlock;
  const int64_t b0 = chunk * blocks / num_chunks, b1 = (chunk + 1) * blocks / num_chunks;
  *c0 = b0 * kBlock < D ? b0 * kBlock : D;
  *c1 = b1 * kBlock < D ? b1 * kBlock : D;
}

// Task `task` = (n, m, channel chunk); corners holds 2 * L * P entries. The corners of query q + 1 are
// listed (and their rows prefetched) before query q is processed, so the gathers and the
// read-modify-writes of grad_value find their lines in cache.
template <typename T>
void backward(const BackwardArgs<T>& a, int64_t task, PointCorners<T>* corners) {
  const Sizes& s = a.sz;
  const int64_t chunk = task % a.num_chunks;
  const int64_t n = task / a.num_chunks / s.M, m = task / a.num_chunks % s.M;
  int64_t c0, c1;
  chunk_channels<T>(s.D, a.num_chunks, chunk, &c0, &c1);
  const int64_t channels = c1 - c0;
  const int64_t MD = s.M * s.D;
  const int64_t LP = s.L * s.P;
  const T* value = a.value + n * s.S * MD + m * s.D + c0;
  T* grad_value = a.grad_value + n * s.S * MD + m * s.D + c0;
  // This task is the only writer of grad_value[n, :, m, c0:c1], so it zeroes it here (first touch by
  // the thread that then uses it) and the host allocates grad_value uninitialised.
  for (int64_t i = 0; i < s.S; ++i) __builtin_memset(grad_value + i * MD, 0, channels * sizeof(T));
  const auto load_full = [](const T* p) { return load(p); };
  const auto store_full = [](T* p, const Vec<T>& v) { store(p, v); };
  const int64_t tail = channels % kLanes<T>;
  const auto load_tail = [tail](const T* p) { return load_partial(p, tail); };
  const auto store_tail = [tail](T* p, const Vec<T>& v) { store_partial(p, v, tail); };
  const int64_t samples = s.N * s.Lq * s.M * s.L * s.P;

  // This head's locations, weights, gradient rows and grad_loc / grad_attn entries are M heads apart
  // and their lines are used once: they are fetched kAhead queries ahead of list_corners.
  constexpr int64_t kAhead = 4;
  const auto list_corners = [&](int64_t q, PointCorners<T>* points) {
    const int64_t qm = (n * s.Lq + q) * s.M + m;
    if (q + kAhead < s.Lq) {
      const int64_t ahead = qm + kAhead * s.M;
      for (int64_t b = 0; b < LP * 2 * static_cast<int64_t>(sizeof(T)); b += 64)
        __builtin_prefetch(reinterpret_cast<const char*>(a.sampling_loc + ahead * LP * 2) + b);
      for (int64_t b = 0; b < LP * static_cast<int64_t>(sizeof(T)); b += 64)
        __builtin_prefetch(reinterpret_cast<const char*>(a.attn_weight + ahead * LP) + b);
      prefetch_row(a.grad_output + ahead * s.D + c0, channels);
      if (a.num_chunks == 1) {
        for (int64_t b = 0; b < LP * 2 * static_cast<int64_t>(sizeof(T)); b += 64)
          __builtin_prefetch(reinterpret_cast<const char*>(a.grad_loc + ahead * LP * 2) + b, 1);
        for (int64_t b = 0; b < LP * static_cast<int64_t>(sizeof(T)); b += 64)
          __builtin_prefetch(reinterpret_cast<const char*>(a.grad_attn + ahead * LP) + b, 1);
      }
    }
    for (int64_t l = 0; l < s.L; ++l) {
      const int64_t H = a.spatial_shapes[2 * l], W = a.spatial_shapes[2 * l + 1];
      for (int64_t p = 0; p < s.P; ++p) {
        const int64_t i = (qm * s.L + l) * s.P + p;
        PointCorners<T>& b = points[l * s.P + p];
        b.n = 0;
        for_each_corner(a.sampling_loc[2 * i], a.sampling_loc[2 * i + 1], H, W, a.level_start_index[l], MD,
                        [&](int64_t offset, T w, T dw, T dh) {
                          prefetch_row(value + offset, channels);
                          prefetch_row(grad_value + offset, channels);
                          b.offset[b.n] = offset;
                          b.w[b.n] = w;
                          b.dw[b.n] = dw;
                          b.dh[b.n] = dh;
                          ++b.n;
                        });
      }
    }
  };

  if (s.Lq > 0) list_corners(0, corners);
  for (int64_t q = 0; q < s.Lq; ++q) {
    PointCorners<T>* points = corners + (q % 2) * LP;
    if (q + 1 < s.Lq) list_corners(q + 1, corners + ((q + 1) % 2) * LP);
    const int64_t qm = (n * s.Lq + q) * s.M + m;
    const T* g = a.grad_output + qm * s.D + c0;
    for (int64_t l = 0; l < s.L; ++l) {
      const int64_t H = a.spatial_shapes[2 * l], W = a.spatial_shapes[2 * l + 1];
      for (int64_t p = 0; p < s.P; ++p) {
        const int64_t i = (qm * s.L + l) * s.P + p;
        const PointCorners<T>& b = points[l * s.P + p];
        const T attn = a.attn_weight[i];
        T sums[3] = {0, 0, 0};
        if (b.n > 0) {
          Vec<T> dots[4] = {};
          int64_t ch = 0;
          for (; ch + kLanes<T> <= channels; ch += kLanes<T>)
            backward_vector(value + ch, grad_value + ch, g + ch, b, attn, dots, load_full, store_full);
          if (tail) backward_vector(value + ch, grad_value + ch, g + ch, b, attn, dots, load_tail, store_tail);
          for (int c = 0; c < b.n; ++c) {
            const T dot = hsum<T, kVecBytes>(dots[c]);
            sums[0] += b.w[c] * dot;
            sums[1] += b.dw[c] * dot;
            sums[2] += b.dh[c] * dot;
          }
        }
        if (a.num_chunks == 1) {
          a.grad_attn[i] = sums[0];
          a.grad_loc[2 * i] = sums[1] * (attn * static_cast<T>(W));
          a.grad_loc[2 * i + 1] = sums[2] * (attn * static_cast<T>(H));
        } else {
          T* partial = a.partial + (chunk * samples + i) * 3;
          partial[0] = sums[0];
          partial[1] = sums[1];
          partial[2] = sums[2];
        }
      }
    }
  }
}

template <typename T>
void backward_reduce(const BackwardArgs<T>& a, int64_t begin, int64_t end) {
  const Sizes& s = a.sz;
  const int64_t samples = s.N * s.Lq * s.M * s.L * s.P;
  for (int64_t i = begin; i < end; ++i) {
    T sums[3] = {0, 0, 0};
    for (int64_t chunk = 0; chunk < a.num_chunks; ++chunk) {
      const T* partial = a.partial + (chunk * samples + i) * 3;
      sums[0] += partial[0];
      sums[1] += partial[1];
      sums[2] += partial[2];
    }
    const int64_t l = i / s.P % s.L;
    const T attn = a.attn_weight[i];
    a.grad_attn[i] = sums[0];
    a.grad_loc[2 * i] = sums[1] * (attn * static_cast<T>(a.spatial_shapes[2 * l + 1]));
    a.grad_loc[2 * i + 1] = sums[2] * (attn * static_cast<T>(a.spatial_shapes[2 * l]));
  }
}

template <typename T>
Kernels<T> make_kernels() {
  return Kernels<T>{&forward<T>, &backward<T>, &backward_reduce<T>};
}

}  // namespace
}  // namespace ms_deform_attn_cpu
}  // namespace sam_detr

#pragma GCC diagnostic pop
