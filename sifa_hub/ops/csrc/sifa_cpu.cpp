// Fused SIFA operator for CPU: forward and backward in one pass over the pixels, no K²-fold tensors.
//
// Layout. The features are channels-last and contiguous: x, y, grad_y and grad_x are (B, T, H, W, C), so a query,
// an output pixel and each of the four bilinear corners of a sample are contiguous C-vectors, read and written in
// place (the Python wrapper hands these tensors over as views of channels_last_3d inputs, or makes one copy of
// other layouts; for those the forward can write y as (B, C, T, H, W) directly, through a per-row buffer). The
// offsets and their gradient are (B, T-1, H, W, 2K²) views with any strides (a permuted view of PyTorch's
// (B, 2K², T-1, H, W) layout costs no copy: a pixel's 2K² values are read with a stride).
//
// Vectors. The channel loops use GCC/Clang vector types of 64 bytes (16 floats, 8 doubles): one AVX-512
// register, two AVX2 registers, four SSE registers, whatever the build targets; channels beyond the last full
// vector run a scalar tail.
//
// Work split. Forward: one task per (step, row), every pixel writes only its own output. Backward: the
// scatter of a pixel's sample gradients into its key frame touches rows h - P - M .. h + d(K-1) - P + M + 1
// (M = largest |row offset|), so each step's rows are cut into bands taller than that reach: bands of the same
// parity never write the same key rows, even bands run in parallel, then odd bands. No atomics, and the result
// does not depend on the number of threads (bitwise deterministic).

#include <torch/extension.h>

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

namespace {

template <typename scalar_t>
struct Vec {
  typedef scalar_t type __attribute__((vector_size(64)));
  static constexpr int64_t size = 64 / sizeof(scalar_t);
};

template <typename scalar_t>
using vec_t = typename Vec<scalar_t>::type;

template <typename scalar_t>
inline vec_t<scalar_t> load(const scalar_t* p) {
  vec_t<scalar_t> v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

template <typename scalar_t>
inline void store(scalar_t* p, vec_t<scalar_t> v) {
  std::memcpy(p, &v, sizeof(v));
}

template <typename scalar_t>
inline vec_t<scalar_t> splat(scalar_t a) {
  return vec_t<scalar_t>{} + a;
}

// Sum of the lanes. With __builtin_shufflevector (Clang, GCC >= 12) the vector is halved in registers: a sum
// through memory (the fallback) stalls on store-to-load forwarding, a third of the forward kernel's time.
#if defined(__clang__) || (defined(__GNUC__) && __GNUC__ >= 12)
typedef float float8_t __attribute__((vector_size(32)));
typedef float float4_t __attribute__((vector_size(16)));
typedef double double4_t __attribute__((vector_size(32)));
typedef double double2_t __attribute__((vector_size(16)));

template <typename scalar_t>
inline scalar_t hsum(vec_t<scalar_t> v);

template <>
inline float hsum<float>(vec_t<float> v) {
  const float8_t a = __builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7) +
                     __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15);
  const float4_t b = __builtin_shufflevector(a, a, 0, 1, 2, 3) + __builtin_shufflevector(a, a, 4, 5, 6, 7);
  return (b[0] + b[2]) + (b[1] + b[3]);
}

template <>
inline double hsum<double>(vec_t<double> v) {
  const double4_t a = __builtin_shufflevector(v, v, 0, 1, 2, 3) + __builtin_shufflevector(v, v, 4, 5, 6, 7);
  const double2_t b = __builtin_shufflevector(a, a, 0, 1) + __builtin_shufflevector(a, a, 2, 3);
  return b[0] + b[1];
}
#else
template <typename scalar_t>
inline scalar_t hsum(vec_t<scalar_t> v) {
  scalar_t a[Vec<scalar_t>::size];
  std::memcpy(a, &v, sizeof(v));
  for (int64_t width = Vec<scalar_t>::size / 2; width > 0; width /= 2)
    for (int64_t i = 0; i < width; ++i) a[i] += a[i + width];
  return a[0];
}
#endif

// Strides of a (B, T-1, H, W, 2K²) offsets view.
struct OffsetStrides {
  int64_t b = 0, s = 0, h = 0, w = 0, k = 0;
  OffsetStrides() = default;
  explicit OffsetStrides(const torch::Tensor& t)
      : b(t.stride(0)), s(t.stride(1)), h(t.stride(2)), w(t.stride(3)), k(t.stride(4)) {}
  int64_t pixel(int64_t bi, int64_t step, int64_t hi, int64_t wi) const { return bi * b + step * s + hi * h + wi * w; }
};

struct Geometry {
  int64_t B, C, T, H, W, K, dilation, groups, pad;
  bool softmax;
  std::vector<int64_t> grid_row, grid_col;  // (i·d - P, j·d - P) of kernel position k = i·K + j
  int64_t steps() const { return T - 1; }
  int64_t k2() const { return K * K; }
  int64_t cg() const { return C / groups; }
  int64_t frame() const { return H * W * C; }  // elements of one (H, W, C) frame
  double scale() const { return static_cast<double>(C) / std::sqrt(static_cast<double>(C) / groups); }
};

// One bilinear sample: the four corners' C-vectors (a zero vector for corners outside the frame), their weights
// and the derivatives of the weights by row and column. `used` is 0 (no corner in the frame: the sample and its
// gradients are 0), 1 (a point on integer coordinates: only corner 0 has a non-zero weight, the others still
// carry the offsets' gradient) or 4.
template <typename scalar_t>
struct Sample {
  int used = 0;
  const scalar_t* v[4];
  scalar_t* g[4];  // the corners' gradient vectors (backward only)
  scalar_t w[4] = {0, 0, 0, 0};
  scalar_t d_row[4] = {0, 0, 0, 0};
  scalar_t d_col[4] = {0, 0, 0, 0};
};

// Per-thread scratch: a zero C-vector read in place of outside corners, and a C-vector that absorbs the
// gradients of outside corners.
template <typename scalar_t>
struct Scratch {
  std::vector<scalar_t> zeros, sink;
  explicit Scratch(int64_t C) : zeros(C, 0), sink(C, 0) {}
};

// The sample at (row, col) of a key frame (H, W, C) and, when `grad` is given, of its gradient. Points on
// integer coordinates take the derivative from the right, as grid_sample (the corner of weight 0 is still inside).
template <typename scalar_t>
inline void locate(scalar_t row, scalar_t col, const Geometry& g, const scalar_t* keys, scalar_t* grad,
                   Scratch<scalar_t>& scratch, Sample<scalar_t>& s) {
  const bool any_corner = row >= -1 && row < g.H && col >= -1 && col < g.W;  // false for NaN too
  const scalar_t r0f = any_corner ? std::floor(row) : 0, c0f = any_corner ? std::floor(col) : 0;
  const int64_t r0 = static_cast<int64_t>(r0f), c0 = static_cast<int64_t>(c0f);
  const scalar_t lr = row - r0f, lc = col - c0f;
  if (any_corner && r0 >= 0 && r0 + 1 < g.H && c0 >= 0 && c0 + 1 < g.W) {  // all four corners inside: the common case
    const int64_t index = (r0 * g.W + c0) * g.C, down = g.W * g.C;
    s.v[0] = keys + index;
    s.v[1] = s.v[0] + g.C;
    s.v[2] = s.v[0] + down;
    s.v[3] = s.v[2] + g.C;
    if (grad != nullptr) {
      s.g[0] = grad + index;
      s.g[1] = s.g[0] + g.C;
      s.g[2] = s.g[0] + down;
      s.g[3] = s.g[2] + g.C;
    }
    s.w[0] = (1 - lr) * (1 - lc);
    s.w[1] = (1 - lr) * lc;
    s.w[2] = lr * (1 - lc);
    s.w[3] = lr * lc;
    s.d_row[0] = lc - 1;
    s.d_row[1] = -lc;
    s.d_row[2] = 1 - lc;
    s.d_row[3] = lc;
    s.d_col[0] = lr - 1;
    s.d_col[1] = 1 - lr;
    s.d_col[2] = -lr;
    s.d_col[3] = lr;
    s.used = (lr == 0 && lc == 0) ? 1 : 4;
    return;
  }
  s.used = 0;
  for (int j = 0; j < 4; ++j) {
    s.v[j] = scratch.zeros.data();
    s.g[j] = scratch.sink.data();
    s.w[j] = s.d_row[j] = s.d_col[j] = 0;
  }
  if (!any_corner) return;
  bool inside = false;
  for (int j = 0; j < 4; ++j) {
    const int dr = j >> 1, dc = j & 1;
    const int64_t r = r0 + dr, c = c0 + dc;
    const scalar_t wr = dr ? lr : 1 - lr, wc = dc ? lc : 1 - lc;
    if (r < 0 || r >= g.H || c < 0 || c >= g.W) continue;
    const int64_t index = (r * g.W + c) * g.C;
    s.v[j] = keys + index;
    if (grad != nullptr) s.g[j] = grad + index;
    s.w[j] = wr * wc;
    s.d_row[j] = (dr ? 1 : -1) * wc;
    s.d_col[j] = wr * (dc ? 1 : -1);
    inside = true;
  }
  if (inside) s.used = (lr == 0 && lc == 0 && s.w[0] != 0) ? 1 : 4;
}

// s[c] = Σ_j w_j v_j[c] for c in [0, n), stored to `out`; returns Σ q·s and, with r, Σ r·s in `dot_r`.
template <typename scalar_t, bool ONE, bool WITH_R>
inline scalar_t blend_dot(const Sample<scalar_t>& sm, int64_t c0, const scalar_t* __restrict__ q,
                          const scalar_t* __restrict__ r, scalar_t* __restrict__ out, int64_t n, scalar_t& dot_r) {
  using V = vec_t<scalar_t>;
  constexpr int64_t L = Vec<scalar_t>::size;
  const scalar_t* __restrict__ v0 = sm.v[0] + c0;
  const scalar_t* __restrict__ v1 = sm.v[1] + c0;
  const scalar_t* __restrict__ v2 = sm.v[2] + c0;
  const scalar_t* __restrict__ v3 = sm.v[3] + c0;
  const scalar_t w0 = sm.w[0], w1 = sm.w[1], w2 = sm.w[2], w3 = sm.w[3];
  V aq0 = splat<scalar_t>(0), aq1 = aq0, ar0 = aq0, ar1 = aq0;
  auto sample = [&](int64_t c) -> V {
    if (ONE) return w0 * load(v0 + c);
    return w0 * load(v0 + c) + w1 * load(v1 + c) + w2 * load(v2 + c) + w3 * load(v3 + c);
  };
  int64_t c = 0;
  for (; c + 2 * L <= n; c += 2 * L) {
    const V s0 = sample(c), s1 = sample(c + L);
    store(out + c, s0);
    store(out + c + L, s1);
    aq0 += load(q + c) * s0;
    aq1 += load(q + c + L) * s1;
    if (WITH_R) {
      ar0 += load(r + c) * s0;
      ar1 += load(r + c + L) * s1;
    }
  }
  if (c + L <= n) {
    const V s0 = sample(c);
    store(out + c, s0);
    aq0 += load(q + c) * s0;
    if (WITH_R) ar0 += load(r + c) * s0;
    c += L;
  }
  scalar_t dq = hsum<scalar_t>(aq0 + aq1), dr = WITH_R ? hsum<scalar_t>(ar0 + ar1) : 0;
  for (; c < n; ++c) {
    const scalar_t s = ONE ? w0 * v0[c] : w0 * v0[c] + w1 * v1[c] + w2 * v2[c] + w3 * v3[c];
    out[c] = s;
    dq += q[c] * s;
    if (WITH_R) dr += r[c] * s;
  }
  dot_r = dr;
  return dq;
}

// Channels per block of sample_group: the K² samples of a pixel read ~(K+1)² distinct key pixels, several times
// each; blocks of 1 KiB per key pixel keep those in L1 while the K² samples are blended.
constexpr int64_t kBlockBytes = 1024;

// Samples of group `gi` of one pixel: stores them in `samples` (k2, C) and returns their correlations with q
// (and with r, d loss / d weight in the backward) in corr / corr_r (k2, G).
template <typename scalar_t, bool WITH_R>
inline void sample_group(const Geometry& g, const Sample<scalar_t>* sm, int64_t gi, const scalar_t* q,
                         const scalar_t* r, scalar_t* samples, scalar_t* corr, scalar_t* corr_r) {
  constexpr int64_t block = kBlockBytes / sizeof(scalar_t);
  const int64_t C = g.C, G = g.groups, k2 = g.k2(), c_end = (gi + 1) * g.cg();
  for (int64_t k = 0; k < k2; ++k) corr[k * G + gi] = WITH_R ? (corr_r[k * G + gi] = 0) : 0;
  for (int64_t c0 = gi * g.cg(); c0 < c_end; c0 += block) {
    const int64_t n = std::min(block, c_end - c0);
    for (int64_t k = 0; k < k2; ++k) {
      scalar_t* s = samples + k * C + c0;
      scalar_t dq = 0, dr = 0;
      if (sm[k].used == 0)
        std::fill(s, s + n, scalar_t(0));
      else if (sm[k].used == 1)
        dq = blend_dot<scalar_t, true, WITH_R>(sm[k], c0, q + c0, WITH_R ? r + c0 : nullptr, s, n, dr);
      else
        dq = blend_dot<scalar_t, false, WITH_R>(sm[k], c0, q + c0, WITH_R ? r + c0 : nullptr, s, n, dr);
      corr[k * G + gi] += dq;
      if (WITH_R) corr_r[k * G + gi] += dr;
    }
  }
  const scalar_t inv_c = scalar_t(1) / static_cast<scalar_t>(C);
  for (int64_t k = 0; k < k2; ++k) corr[k * G + gi] *= inv_c;
}

// out[c] = Σ_k a_k samples[k][c] over the channels of group gi, four vectors at a time (independent chains).
template <typename scalar_t>
inline void aggregate(const Geometry& g, const scalar_t* weights, const Sample<scalar_t>* sm, int64_t gi,
                      const scalar_t* __restrict__ samples, scalar_t* __restrict__ out) {
  using V = vec_t<scalar_t>;
  constexpr int64_t L = Vec<scalar_t>::size;
  const int64_t C = g.C, G = g.groups, Cg = g.cg(), c_end = gi * Cg + Cg, k2 = g.k2();
  int64_t c = gi * Cg;
  for (; c + 4 * L <= c_end; c += 4 * L) {
    V a0 = splat<scalar_t>(0), a1 = a0, a2 = a0, a3 = a0;
    for (int64_t k = 0; k < k2; ++k) {
      if (sm[k].used == 0) continue;
      const scalar_t wk = weights[k * G + gi];
      const scalar_t* s = samples + k * C + c;
      a0 += wk * load(s);
      a1 += wk * load(s + L);
      a2 += wk * load(s + 2 * L);
      a3 += wk * load(s + 3 * L);
    }
    store(out + c, a0);
    store(out + c + L, a1);
    store(out + c + 2 * L, a2);
    store(out + c + 3 * L, a3);
  }
  for (; c + L <= c_end; c += L) {
    V a0 = splat<scalar_t>(0);
    for (int64_t k = 0; k < k2; ++k)
      if (sm[k].used != 0) a0 += weights[k * G + gi] * load(samples + k * C + c);
    store(out + c, a0);
  }
  for (; c < c_end; ++c) {
    scalar_t a = 0;
    for (int64_t k = 0; k < k2; ++k)
      if (sm[k].used != 0) a += weights[k * G + gi] * samples[k * C + c];
    out[c] = a;
  }
}

// Tasks smaller than this many channel-sample products run on the calling thread: a parallel region costs
// more than it saves on small maps (and a scheduling quantum per call on a busy machine), as in ATen.
constexpr int64_t kMinWorkPerChunk = 32768;

inline int64_t grain(int64_t work_per_task) {
  return std::max<int64_t>(1, kMinWorkPerChunk / std::max<int64_t>(1, work_per_task));
}

// Sample points of the K² keys of pixel (h, w); `off` points at the pixel's 2K² offsets, `stride` apart (or is
// null).
template <typename scalar_t>
inline void positions(const Geometry& g, const scalar_t* off, int64_t stride, int64_t h, int64_t w, scalar_t* rows,
                      scalar_t* cols) {
  for (int64_t k = 0; k < g.k2(); ++k) {
    rows[k] = static_cast<scalar_t>(h + g.grid_row[k]) + (off ? off[2 * k * stride] : scalar_t(0));
    cols[k] = static_cast<scalar_t>(w + g.grid_col[k]) + (off ? off[(2 * k + 1) * stride] : scalar_t(0));
  }
}

// Weights of the samples from the correlations (in place), softmax over k per group when asked.
template <typename scalar_t>
inline void normalize(const Geometry& g, scalar_t* corr) {
  if (!g.softmax) return;
  const int64_t k2 = g.k2(), G = g.groups;
  const scalar_t scale = static_cast<scalar_t>(g.scale());
  for (int64_t gi = 0; gi < G; ++gi) {
    scalar_t mx = -INFINITY;
    for (int64_t k = 0; k < k2; ++k) mx = std::max(mx, corr[k * G + gi] * scale);
    scalar_t sum = 0;
    for (int64_t k = 0; k < k2; ++k) sum += (corr[k * G + gi] = std::exp(corr[k * G + gi] * scale - mx));
    for (int64_t k = 0; k < k2; ++k) corr[k * G + gi] /= sum;
  }
}

// Write a (W, C) row buffer to row h of frame t of a (B, C, T, H, W) tensor, by tiles of 16 channels (16 source
// columns side by side, whole destination rows).
template <typename scalar_t>
inline void store_row_channels_first(const Geometry& g, const scalar_t* row, int64_t b, int64_t t, int64_t h,
                                     scalar_t* y) {
  constexpr int64_t kTile = 16;
  scalar_t* dst[kTile];
  for (int64_t c0 = 0; c0 < g.C; c0 += kTile) {
    const int64_t n = std::min(kTile, g.C - c0);
    for (int64_t i = 0; i < n; ++i) dst[i] = y + ((b * g.C + c0 + i) * g.T + t) * g.H * g.W + h * g.W;
    for (int64_t w = 0; w < g.W; ++w) {
      const scalar_t* src = row + w * g.C + c0;
      if (n == kTile) {
        for (int64_t i = 0; i < kTile; ++i) dst[i][w] = src[i];  // fixed trip count: unrolled
      } else {
        for (int64_t i = 0; i < n; ++i) dst[i][w] = src[i];
      }
    }
  }
}

// y is (B, T, H, W, C), or (B, C, T, H, W) with `channels_first_out` (each output row is computed in a buffer
// and transposed into place, which saves a channels-last copy of y and a pass over it).
template <typename scalar_t>
void forward_kernel(const Geometry& g, const scalar_t* x, const scalar_t* off, const OffsetStrides& os, scalar_t* y,
                    bool channels_first_out) {
  const int64_t C = g.C, G = g.groups, k2 = g.k2(), S = g.steps();
  at::parallel_for(0, g.B * S * g.H, grain(g.W * C * k2), [&](int64_t begin, int64_t end) {
    std::vector<scalar_t> samples(k2 * C), corr(k2 * G), rows(k2), cols(k2);
    std::vector<scalar_t> row_buffer(channels_first_out ? g.W * C : 0);
    std::vector<Sample<scalar_t>> sm(k2);
    Scratch<scalar_t> scratch(C);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t h = task % g.H, n = task / g.H, b = n / S, step = n % S;
      const int64_t row0 = ((b * g.T + step) * g.H + h) * g.W;  // pixel (b, step, h, 0) of x and y
      const scalar_t* keys = x + (b * g.T + step + 1) * g.frame();
      scalar_t* out_row = channels_first_out ? row_buffer.data() : y + row0 * C;
      for (int64_t w = 0; w < g.W; ++w) {
        const scalar_t* q = x + (row0 + w) * C;
        scalar_t* out = out_row + w * C;
        positions(g, off ? off + os.pixel(b, step, h, w) : nullptr, os.k, h, w, rows.data(), cols.data());
        for (int64_t k = 0; k < k2; ++k) locate<scalar_t>(rows[k], cols[k], g, keys, nullptr, scratch, sm[k]);
        for (int64_t gi = 0; gi < G; ++gi)
          sample_group<scalar_t, false>(g, sm.data(), gi, q, nullptr, samples.data(), corr.data(), nullptr);
        normalize(g, corr.data());
        for (int64_t gi = 0; gi < G; ++gi) aggregate<scalar_t>(g, corr.data(), sm.data(), gi, samples.data(), out);
      }
      if (channels_first_out) store_row_channels_first(g, out_row, b, step, h, y);
    }
  });
}

// Gradients of one pixel's sample k over the channels [c0, c0 + n): d loss / d sample = wk · go + gc · q,
// scattered to the sample's corners; the query gradient gc · sample; and, with `NEED_OFF`, Σ_c d loss / d sample
// · corner value for the offsets (added to corner_dots).
template <typename scalar_t, bool NEED_OFF>
inline void sample_grads(const Sample<scalar_t>& sm, int64_t c0, const scalar_t* __restrict__ s,
                         const scalar_t* __restrict__ go, const scalar_t* __restrict__ q, scalar_t wk, scalar_t gc,
                         scalar_t* __restrict__ dq, int64_t n, scalar_t* corner_dots) {
  using V = vec_t<scalar_t>;
  constexpr int64_t L = Vec<scalar_t>::size;
  const scalar_t* __restrict__ v0 = sm.v[0] + c0;
  const scalar_t* __restrict__ v1 = sm.v[1] + c0;
  const scalar_t* __restrict__ v2 = sm.v[2] + c0;
  const scalar_t* __restrict__ v3 = sm.v[3] + c0;
  scalar_t* g0 = sm.g[0] + c0;
  scalar_t* g1 = sm.g[1] + c0;
  scalar_t* g2 = sm.g[2] + c0;
  scalar_t* g3 = sm.g[3] + c0;
  const scalar_t w0 = sm.w[0], w1 = sm.w[1], w2 = sm.w[2], w3 = sm.w[3];
  V d0 = splat<scalar_t>(0), d1 = d0, d2 = d0, d3 = d0;
  int64_t c = 0;
  for (; c + L <= n; c += L) {
    const V gs = wk * load(go + c) + gc * load(q + c);
    store(dq + c, load(dq + c) + gc * load(s + c));
    // Corners may share a gradient vector (the sink of outside corners): read-modify-write one at a time.
    store(g0 + c, load(g0 + c) + w0 * gs);
    store(g1 + c, load(g1 + c) + w1 * gs);
    store(g2 + c, load(g2 + c) + w2 * gs);
    store(g3 + c, load(g3 + c) + w3 * gs);
    if (NEED_OFF) {
      d0 += gs * load(v0 + c);
      d1 += gs * load(v1 + c);
      d2 += gs * load(v2 + c);
      d3 += gs * load(v3 + c);
    }
  }
  scalar_t e0 = hsum<scalar_t>(d0), e1 = hsum<scalar_t>(d1), e2 = hsum<scalar_t>(d2), e3 = hsum<scalar_t>(d3);
  for (; c < n; ++c) {
    const scalar_t gs = wk * go[c] + gc * q[c];
    dq[c] += gc * s[c];
    g0[c] += w0 * gs;
    g1[c] += w1 * gs;
    g2[c] += w2 * gs;
    g3[c] += w3 * gs;
    if (NEED_OFF) {
      e0 += gs * v0[c];
      e1 += gs * v1[c];
      e2 += gs * v2[c];
      e3 += gs * v3[c];
    }
  }
  corner_dots[0] += e0;
  corner_dots[1] += e1;
  corner_dots[2] += e2;
  corner_dots[3] += e3;
}

// grad_w (d loss / d weight, in place) becomes d loss / d (q · sample) = d loss / d correlation / C.
template <typename scalar_t>
inline void correlation_grads(const Geometry& g, const scalar_t* weight, scalar_t* grad_w) {
  const int64_t k2 = g.k2(), G = g.groups;
  const scalar_t inv_c = scalar_t(1) / static_cast<scalar_t>(g.C);
  const scalar_t scale = static_cast<scalar_t>(g.scale());
  for (int64_t gi = 0; gi < G; ++gi) {
    scalar_t mean = 0;
    if (g.softmax)
      for (int64_t k = 0; k < k2; ++k) mean += weight[k * G + gi] * grad_w[k * G + gi];
    for (int64_t k = 0; k < k2; ++k) {
      scalar_t& gw = grad_w[k * G + gi];
      gw = g.softmax ? scale * weight[k * G + gi] * (gw - mean) * inv_c : gw * inv_c;
    }
  }
}

template <typename scalar_t>
void backward_kernel(const Geometry& g, const scalar_t* x, const scalar_t* off, const OffsetStrides& os,
                     const scalar_t* grad_y, scalar_t* grad_x, scalar_t* grad_keys, scalar_t* grad_off,
                     const OffsetStrides& gs, int64_t band) {
  const int64_t C = g.C, G = g.groups, Cg = g.cg(), k2 = g.k2(), S = g.steps();
  const int64_t n_bands = (g.H + band - 1) / band;
  for (int parity = 0; parity < 2; ++parity) {
    const int64_t bands_of_parity = (n_bands - parity + 1) / 2;
    const int64_t work = std::min(band, g.H) * g.W * C * k2 * 3;  // backward ≈ 3 forward passes
    at::parallel_for(0, g.B * S * bands_of_parity, grain(work), [&](int64_t begin, int64_t end) {
      std::vector<scalar_t> samples(k2 * C), weight(k2 * G), grad_w(k2 * G), rows(k2), cols(k2);
      std::vector<Sample<scalar_t>> sm(k2);
      Scratch<scalar_t> scratch(C);
      for (int64_t task = begin; task < end; ++task) {
        const int64_t n = task / bands_of_parity, bi = 2 * (task % bands_of_parity) + parity;
        const int64_t b = n / S, step = n % S;
        const scalar_t* keys = x + (b * g.T + step + 1) * g.frame();
        scalar_t* gkeys = grad_keys + n * g.frame();
        for (int64_t h = bi * band; h < std::min(g.H, (bi + 1) * band); ++h) {
          const int64_t row0 = ((b * g.T + step) * g.H + h) * g.W;
          for (int64_t w = 0; w < g.W; ++w) {
            const scalar_t* q = x + (row0 + w) * C;
            const scalar_t* go = grad_y + (row0 + w) * C;
            scalar_t* dq = grad_x + (row0 + w) * C;
            positions(g, off ? off + os.pixel(b, step, h, w) : nullptr, os.k, h, w, rows.data(), cols.data());
            for (int64_t k = 0; k < k2; ++k) locate<scalar_t>(rows[k], cols[k], g, keys, gkeys, scratch, sm[k]);
            // Recompute the samples, their correlations and d loss / d weight.
            for (int64_t gi = 0; gi < G; ++gi)
              sample_group<scalar_t, true>(g, sm.data(), gi, q, go, samples.data(), weight.data(), grad_w.data());
            normalize(g, weight.data());
            correlation_grads(g, weight.data(), grad_w.data());
            std::fill(dq, dq + C, scalar_t(0));
            for (int64_t k = 0; k < k2; ++k) {
              scalar_t corner_dots[4] = {0, 0, 0, 0};
              if (sm[k].used != 0) {
                for (int64_t gi = 0; gi < G; ++gi) {
                  const int64_t c0 = gi * Cg;
                  const scalar_t* s = samples.data() + k * C + c0;
                  const scalar_t wk = weight[k * G + gi], gc = grad_w[k * G + gi];
                  if (grad_off != nullptr)
                    sample_grads<scalar_t, true>(sm[k], c0, s, go + c0, q + c0, wk, gc, dq + c0, Cg, corner_dots);
                  else
                    sample_grads<scalar_t, false>(sm[k], c0, s, go + c0, q + c0, wk, gc, dq + c0, Cg, corner_dots);
                }
              }
              if (grad_off != nullptr) {
                scalar_t d_row = 0, d_col = 0;
                for (int j = 0; j < 4; ++j) {
                  d_row += sm[k].d_row[j] * corner_dots[j];
                  d_col += sm[k].d_col[j] * corner_dots[j];
                }
                scalar_t* go_pixel = grad_off + gs.pixel(b, step, h, w);
                go_pixel[2 * k * gs.k] = d_row;
                go_pixel[(2 * k + 1) * gs.k] = d_col;
              }
            }
          }
        }
      }
    });
  }
}

Geometry geometry(const torch::Tensor& x, int64_t K, int64_t dilation, int64_t groups, bool softmax) {
  Geometry g;
  g.B = x.size(0);
  g.T = x.size(1);
  g.H = x.size(2);
  g.W = x.size(3);
  g.C = x.size(4);
  g.K = K;
  g.dilation = dilation;
  g.groups = groups;
  g.pad = (dilation * (K - 1) + 1) / 2;
  g.softmax = softmax;
  for (int64_t k = 0; k < K * K; ++k) {
    g.grid_row.push_back((k / K) * dilation - g.pad);
    g.grid_col.push_back((k % K) * dilation - g.pad);
  }
  return g;
}

void check_inputs(const torch::Tensor& x, const c10::optional<torch::Tensor>& offsets, int64_t K) {
  TORCH_CHECK(x.device().is_cpu() && x.dim() == 5 && x.size(1) >= 2 && x.is_contiguous(),
              "sifa_cpu: x must be a contiguous channels-last (B, T>=2, H, W, C) CPU tensor");
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble, "sifa_cpu: float32 or float64 only");
  if (offsets.has_value()) {
    const auto& o = *offsets;
    TORCH_CHECK(o.scalar_type() == x.scalar_type() && o.dim() == 5 && o.size(0) == x.size(0) &&
                    o.size(1) == x.size(1) - 1 && o.size(2) == x.size(2) && o.size(3) == x.size(3) &&
                    o.size(4) == 2 * K * K,
                "sifa_cpu: offsets must be (B, T-1, H, W, 2K²) of x's dtype");
  }
}

// dst (B, N, R) = src (B, R, N) transposed, by 16 × 16 tiles: each tile reads 16 source rows side by side and
// writes whole cache lines (PyTorch's strided copy of the same permutation is several times slower).
template <typename scalar_t>
void transpose_kernel(const scalar_t* src, scalar_t* dst, int64_t B, int64_t R, int64_t N) {
  constexpr int64_t kTile = 16;
  const int64_t r_tiles = (R + kTile - 1) / kTile, n_tiles = (N + kTile - 1) / kTile;
  at::parallel_for(0, B * r_tiles * n_tiles, grain(kTile * kTile * 4), [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t nt = task % n_tiles, rt = (task / n_tiles) % r_tiles, b = task / (n_tiles * r_tiles);
      const int64_t r0 = rt * kTile, n0 = nt * kTile;
      const int64_t rn = std::min(kTile, R - r0), nn = std::min(kTile, N - n0);
      const scalar_t* s = src + (b * R + r0) * N + n0;
      scalar_t* d = dst + (b * N + n0) * R + r0;
      if (rn == kTile && nn == kTile) {
        for (int64_t n = 0; n < kTile; ++n)
          for (int64_t r = 0; r < kTile; ++r) d[n * R + r] = s[r * N + n];  // fixed trip counts: unrolled
      } else {
        for (int64_t n = 0; n < nn; ++n)
          for (int64_t r = 0; r < rn; ++r) d[n * R + r] = s[r * N + n];
      }
    }
  });
}

}  // namespace

// (B, C, *) contiguous → (B, *, C) contiguous (channels_last == true), or (B, *, C) → (B, C, *) (false).
torch::Tensor transpose_channels(const torch::Tensor& t_in, bool channels_last) {
  TORCH_CHECK(t_in.device().is_cpu() && t_in.dim() >= 3, "sifa_cpu: transpose_channels takes a (B, C, ...) CPU tensor");
  const auto t = t_in.contiguous();
  const int64_t B = t.size(0);
  const int64_t C = channels_last ? t.size(1) : t.size(-1);
  const int64_t N = t.numel() / std::max<int64_t>(1, B * C);
  std::vector<int64_t> sizes(t.sizes().begin(), t.sizes().end());
  if (channels_last)
    std::rotate(sizes.begin() + 1, sizes.begin() + 2, sizes.end());
  else
    std::rotate(sizes.begin() + 1, sizes.end() - 1, sizes.end());
  auto out = torch::empty(sizes, t.options());
  if (t.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES(t.scalar_type(), "sifa_transpose", [&] {
    if (channels_last)
      transpose_kernel<scalar_t>(t.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), B, C, N);
    else
      transpose_kernel<scalar_t>(t.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), B, N, C);
  });
  return out;
}

// x (B, T, H, W, C), offsets (B, T-1, H, W, 2K²) or None → y (B, T, H, W, C), all contiguous; or y (B, C, T, H, W)
// contiguous with channels_first_out.
torch::Tensor sifa_forward(const torch::Tensor& x, const c10::optional<torch::Tensor>& offsets, int64_t K,
                           int64_t dilation, int64_t groups, bool softmax, bool channels_first_out) {
  check_inputs(x, offsets, K);
  const auto g = geometry(x, K, dilation, groups, softmax);
  auto y = channels_first_out ? torch::empty({g.B, g.C, g.T, g.H, g.W}, x.options())
                              : torch::empty(x.sizes(), x.options());
  y.select(channels_first_out ? 2 : 1, g.T - 1).zero_();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "sifa_forward", [&] {
    const bool has_off = offsets.has_value();
    forward_kernel<scalar_t>(g, x.data_ptr<scalar_t>(), has_off ? offsets->data_ptr<scalar_t>() : nullptr,
                             has_off ? OffsetStrides(*offsets) : OffsetStrides(), y.data_ptr<scalar_t>(),
                             channels_first_out);
  });
  return y;
}

// Gradients of sifa_forward: grad_x (B, T, H, W, C); grad_offsets as a (B, T-1, H, W, 2K²) view of a contiguous
// tensor, channels-last (B, T-1, H, W, 2K²) with grad_offsets_channels_last, else (B, 2K², T-1, H, W); an empty
// tensor when there are no offsets or need_offsets is false.
std::vector<torch::Tensor> sifa_backward(const torch::Tensor& grad_y_in, const torch::Tensor& x,
                                         const c10::optional<torch::Tensor>& offsets, int64_t K, int64_t dilation,
                                         int64_t groups, bool softmax, bool need_offsets,
                                         bool grad_offsets_channels_last) {
  check_inputs(x, offsets, K);
  TORCH_CHECK(grad_y_in.sizes() == x.sizes(), "sifa_cpu: grad_y must have x's shape");
  const auto grad_y = grad_y_in.to(x.scalar_type()).contiguous();
  const auto g = geometry(x, K, dilation, groups, softmax);
  auto grad_x = torch::empty(x.sizes(), x.options());
  grad_x.select(1, g.T - 1).zero_();  // frame T-1 is never a query
  auto grad_keys = torch::zeros({g.B, g.steps(), g.H, g.W, g.C}, x.options());
  const bool has_off = offsets.has_value();
  need_offsets = need_offsets && has_off;
  auto grad_off = x.new_empty({0});
  if (need_offsets) {
    grad_off = grad_offsets_channels_last
                   ? torch::empty(offsets->sizes(), offsets->options())
                   : torch::empty({g.B, 2 * g.k2(), g.steps(), g.H, g.W}, offsets->options()).permute({0, 2, 3, 4, 1});
  }
  // Band height: rows of a band scatter into rows [top - P - M, bottom + d(K-1) - P + M + 1].
  int64_t band = g.H;
  const double reach = has_off ? offsets->slice(4, 0, 2 * g.k2(), 2).abs().max().item<double>() : 0;
  if (reach < static_cast<double>(g.H))
    band = std::min(g.H, g.dilation * (g.K - 1) + 2 * static_cast<int64_t>(std::ceil(reach)) + 2);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "sifa_backward", [&] {
    backward_kernel<scalar_t>(g, x.data_ptr<scalar_t>(), has_off ? offsets->data_ptr<scalar_t>() : nullptr,
                              has_off ? OffsetStrides(*offsets) : OffsetStrides(), grad_y.data_ptr<scalar_t>(),
                              grad_x.data_ptr<scalar_t>(), grad_keys.data_ptr<scalar_t>(),
                              need_offsets ? grad_off.data_ptr<scalar_t>() : nullptr,
                              need_offsets ? OffsetStrides(grad_off) : OffsetStrides(), band);
  });
  grad_x.narrow(1, 1, g.T - 1).add_(grad_keys);
  return {grad_x, grad_off};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &sifa_forward, "SIFA forward (CPU, channels-last)");
  m.def("backward", &sifa_backward, "SIFA backward (CPU, channels-last)");
  m.def("transpose_channels", &transpose_channels, "(B, C, *) <-> (B, *, C) contiguous copy");
}
