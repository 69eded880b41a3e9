// Fused SIFA operator for CPU: forward and backward in one pass over the pixels, no K²-fold tensors.
//
// Layout. x, y, grad_y, grad_x and offsets stay in PyTorch's (B, C, T, H, W) layout; the key frames 1..T-1
// are copied once to channels-last (B, T-1, H, W, C) so that the four bilinear corners of a sample are four
// contiguous C-vectors. Queries and output rows are transposed through small per-thread (W, C) buffers.
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
#include <vector>

namespace {

template <typename scalar_t>
inline void axpy(scalar_t alpha, const scalar_t* __restrict__ a, scalar_t* __restrict__ out, int64_t n) {
#pragma omp simd
  for (int64_t c = 0; c < n; ++c) out[c] += alpha * a[c];
}

// One bilinear sample point: its four corners (offset of the corner's C-vector in the channels-last key
// frame, bilinear weight, d weight / d row, d weight / d column); `inside[j]` is false for corners outside the
// frame, which read 0 (their weights are 0 too).
template <typename scalar_t>
struct Corners {
  bool any = false;
  bool inside[4] = {false, false, false, false};
  int64_t index[4] = {0, 0, 0, 0};
  scalar_t weight[4] = {0, 0, 0, 0};
  scalar_t d_row[4] = {0, 0, 0, 0};
  scalar_t d_col[4] = {0, 0, 0, 0};
};

// Corners of the sample at (row, col) in an H x W frame whose pixels are C-vectors. Points on integer
// coordinates take the derivative from the right, as grid_sample (the corner of weight 0 is still inside).
template <typename scalar_t>
inline Corners<scalar_t> corners(scalar_t row, scalar_t col, int64_t H, int64_t W, int64_t C) {
  Corners<scalar_t> out;
  if (!(row >= -1 && row < H && col >= -1 && col < W)) return out;  // no corner in the frame
  const scalar_t r0f = std::floor(row), c0f = std::floor(col);
  const int64_t r0 = static_cast<int64_t>(r0f), c0 = static_cast<int64_t>(c0f);
  const scalar_t lr = row - r0f, lc = col - c0f;
  for (int j = 0; j < 4; ++j) {
    const int dr = j >> 1, dc = j & 1;
    const int64_t r = r0 + dr, c = c0 + dc;
    if (r < 0 || r >= H || c < 0 || c >= W) continue;
    const scalar_t wr = dr ? lr : 1 - lr, wc = dc ? lc : 1 - lc;
    out.any = true;
    out.inside[j] = true;
    out.index[j] = (r * W + c) * C;
    out.weight[j] = wr * wc;
    out.d_row[j] = (dr ? 1 : -1) * wc;
    out.d_col[j] = wr * (dc ? 1 : -1);
  }
  return out;
}

// Per-thread scratch: a zero C-vector read in place of outside corners, and four C-vectors that absorb the
// gradients of outside corners.
template <typename scalar_t>
struct Scratch {
  std::vector<scalar_t> zeros, sink;
  explicit Scratch(int64_t C) : zeros(C, 0), sink(4 * C, 0) {}
  const scalar_t* value(const Corners<scalar_t>& cs, int j, const scalar_t* keys) const {
    return cs.inside[j] ? keys + cs.index[j] : zeros.data();
  }
  scalar_t* grad(const Corners<scalar_t>& cs, int j, scalar_t* grad_keys, int64_t C) {
    return cs.inside[j] ? grad_keys + cs.index[j] : sink.data() + j * C;
  }
};

// Dot products accumulate in kLanes independent partial sums (one vector register), reduced by a tree once
// per loop. (With `omp simd reduction` GCC spills the vector to the stack and adds its lanes one by one after
// every loop, which cost more than the loop itself at C = 128.)
constexpr int64_t kLanes = 16;

template <typename scalar_t>
struct Lanes {
  scalar_t v[kLanes] = {};
  scalar_t sum() const {
    scalar_t a[kLanes / 2];
    for (int i = 0; i < 8; ++i) a[i] = v[i] + v[i + 8];
    for (int i = 0; i < 4; ++i) a[i] += a[i + 4];
    return (a[0] + a[2]) + (a[1] + a[3]);
  }
};

// s[c] = Σ_j w_j v_j[c] for c in [0, n), stored to `out`; dot_q = Σ q·s, dot_r = Σ r·s (r may be null).
template <typename scalar_t>
inline void sample_dot(const scalar_t* __restrict__ v0, const scalar_t* __restrict__ v1,
                       const scalar_t* __restrict__ v2, const scalar_t* __restrict__ v3, const scalar_t* w,
                       const scalar_t* __restrict__ q, const scalar_t* __restrict__ r, scalar_t* __restrict__ out,
                       int64_t n, scalar_t& dot_q, scalar_t& dot_r) {
  const scalar_t w0 = w[0], w1 = w[1], w2 = w[2], w3 = w[3];
  Lanes<scalar_t> aq, ar;
  int64_t c = 0;
  if (r == nullptr) {
    for (; c + kLanes <= n; c += kLanes)
      for (int64_t i = 0; i < kLanes; ++i) {
        const scalar_t s = w0 * v0[c + i] + w1 * v1[c + i] + w2 * v2[c + i] + w3 * v3[c + i];
        out[c + i] = s;
        aq.v[i] += q[c + i] * s;
      }
  } else {
    for (; c + kLanes <= n; c += kLanes)
      for (int64_t i = 0; i < kLanes; ++i) {
        const scalar_t s = w0 * v0[c + i] + w1 * v1[c + i] + w2 * v2[c + i] + w3 * v3[c + i];
        out[c + i] = s;
        aq.v[i] += q[c + i] * s;
        ar.v[i] += r[c + i] * s;
      }
  }
  for (; c < n; ++c) {
    const scalar_t s = w0 * v0[c] + w1 * v1[c] + w2 * v2[c] + w3 * v3[c];
    out[c] = s;
    aq.v[0] += q[c] * s;
    if (r != nullptr) ar.v[0] += r[c] * s;
  }
  dot_q = aq.sum();
  dot_r = ar.sum();
}

// out[c] = w · v[c] for c in [0, n); returns Σ q·out (a sample on integer coordinates: one corner).
template <typename scalar_t>
inline scalar_t scaled_dot(const scalar_t* __restrict__ v, scalar_t w, const scalar_t* __restrict__ q,
                           scalar_t* __restrict__ out, int64_t n) {
  Lanes<scalar_t> acc;
  int64_t c = 0;
  for (; c + kLanes <= n; c += kLanes)
    for (int64_t i = 0; i < kLanes; ++i) {
      out[c + i] = w * v[c + i];
      acc.v[i] += q[c + i] * out[c + i];
    }
  for (; c < n; ++c) {
    out[c] = w * v[c];
    acc.v[0] += q[c] * out[c];
  }
  return acc.sum();
}

// Tasks smaller than this many channel-sample products run on the calling thread: a parallel region costs
// more than it saves on small maps (and a scheduling quantum per call on a busy machine), as in ATen.
constexpr int64_t kMinWorkPerChunk = 32768;

inline int64_t grain(int64_t work_per_task) { return std::max<int64_t>(1, kMinWorkPerChunk / std::max<int64_t>(1, work_per_task)); }

struct Geometry {
  int64_t B, C, T, H, W, K, dilation, groups, pad;
  bool softmax;
  std::vector<int64_t> grid_row, grid_col;  // (i·d - P, j·d - P) of kernel position k = i·K + j
  int64_t steps() const { return T - 1; }
  int64_t k2() const { return K * K; }
  int64_t cg() const { return C / groups; }
  double scale() const { return static_cast<double>(C) / std::sqrt(static_cast<double>(C) / groups); }
};

// Sample positions of the K² keys of pixel (h, w) at step `step` of batch `b`.
template <typename scalar_t>
inline void positions(const Geometry& g, const scalar_t* off, int64_t b, int64_t step, int64_t h, int64_t w,
                      scalar_t* rows, scalar_t* cols) {
  const int64_t k2 = g.k2();
  for (int64_t k = 0; k < k2; ++k) {
    rows[k] = static_cast<scalar_t>(h + g.grid_row[k]);
    cols[k] = static_cast<scalar_t>(w + g.grid_col[k]);
  }
  if (off == nullptr) return;
  const int64_t plane = g.steps() * g.H * g.W;  // stride of one offset channel
  const scalar_t* o = off + (b * 2 * k2 * g.steps() + step) * g.H * g.W + h * g.W + w;
  for (int64_t k = 0; k < k2; ++k) {
    rows[k] += o[2 * k * plane];
    cols[k] += o[(2 * k + 1) * plane];
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

// Row transposes between (B, C, T, H, W) and a (W, C) buffer, by tiles of kTile channels: each tile reads
// kTile source rows side by side and writes whole cache lines (a channel-by-channel loop writes with a stride
// of C and is several times slower).
constexpr int64_t kTile = 16;

// Copy row h of frame `step` from (B, C, T, H, W) into a (W, C) buffer.
template <typename scalar_t>
inline void gather_row(const Geometry& g, const scalar_t* src, int64_t b, int64_t step, int64_t h,
                       scalar_t* dst) {
  const scalar_t* rows[kTile];
  for (int64_t c0 = 0; c0 < g.C; c0 += kTile) {
    const int64_t n = std::min(kTile, g.C - c0);
    for (int64_t i = 0; i < n; ++i) rows[i] = src + ((b * g.C + c0 + i) * g.T + step) * g.H * g.W + h * g.W;
    for (int64_t w = 0; w < g.W; ++w) {
      scalar_t* d = dst + w * g.C + c0;
      if (n == kTile) {
        for (int64_t i = 0; i < kTile; ++i) d[i] = rows[i][w];  // fixed trip count: unrolled
      } else {
        for (int64_t i = 0; i < n; ++i) d[i] = rows[i][w];
      }
    }
  }
}

// Write a (W, C) buffer to row h of frame `step` of a (B, C, T, H, W) tensor.
template <typename scalar_t>
inline void scatter_row(const Geometry& g, const scalar_t* src, int64_t b, int64_t step, int64_t h,
                        scalar_t* dst) {
  scalar_t* rows[kTile];
  for (int64_t c0 = 0; c0 < g.C; c0 += kTile) {
    const int64_t n = std::min(kTile, g.C - c0);
    for (int64_t i = 0; i < n; ++i) rows[i] = dst + ((b * g.C + c0 + i) * g.T + step) * g.H * g.W + h * g.W;
    for (int64_t w = 0; w < g.W; ++w) {
      const scalar_t* s = src + w * g.C + c0;
      if (n == kTile) {
        for (int64_t i = 0; i < kTile; ++i) rows[i][w] = s[i];
      } else {
        for (int64_t i = 0; i < n; ++i) rows[i][w] = s[i];
      }
    }
  }
}

template <typename scalar_t>
void forward_kernel(const Geometry& g, const scalar_t* x, const scalar_t* keys_cl, const scalar_t* off,
                    scalar_t* y) {
  const int64_t C = g.C, G = g.groups, Cg = g.cg(), k2 = g.k2(), S = g.steps();
  const scalar_t inv_c = scalar_t(1) / static_cast<scalar_t>(C);
  at::parallel_for(0, g.B * S * g.H, grain(g.W * C * k2), [&](int64_t begin, int64_t end) {
    std::vector<scalar_t> qrow(g.W * C), orow(g.W * C), samples(k2 * C), corr(k2 * G), rows(k2), cols(k2);
    std::vector<char> empty(k2);
    const Scratch<scalar_t> scratch(C);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t h = task % g.H, n = task / g.H, b = n / S, step = n % S;
      const scalar_t* keys = keys_cl + n * g.H * g.W * C;
      gather_row(g, x, b, step, h, qrow.data());
      for (int64_t w = 0; w < g.W; ++w) {
        const scalar_t* q = qrow.data() + w * C;
        scalar_t* out = orow.data() + w * C;
        positions(g, off, b, step, h, w, rows.data(), cols.data());
        for (int64_t k = 0; k < k2; ++k) {
          const auto cs = corners(rows[k], cols[k], g.H, g.W, C);
          scalar_t* s = samples.data() + k * C;
          // Corners of non-zero weight; a point on integer coordinates has only one.
          const scalar_t* v[4];
          scalar_t wt[4] = {0, 0, 0, 0};
          int used = 0;
          for (int j = 0; j < 4; ++j)
            if (cs.inside[j] && cs.weight[j] != 0) {
              v[used] = keys + cs.index[j];
              wt[used++] = cs.weight[j];
            }
          empty[k] = used == 0;
          for (int j = used; j < 4; ++j) v[j] = scratch.zeros.data();
          for (int64_t gi = 0; gi < G; ++gi) {
            const int64_t c0 = gi * Cg;
            scalar_t dq = 0, unused = 0;
            if (used == 0) {
              std::fill(s + c0, s + c0 + Cg, scalar_t(0));
            } else if (used == 1) {
              dq = scaled_dot<scalar_t>(v[0] + c0, wt[0], q + c0, s + c0, Cg);
            } else {
              sample_dot<scalar_t>(v[0] + c0, v[1] + c0, v[2] + c0, v[3] + c0, wt, q + c0, nullptr, s + c0, Cg,
                                   dq, unused);
            }
            corr[k * G + gi] = dq * inv_c;
          }
        }
        normalize(g, corr.data());
        std::fill(out, out + C, scalar_t(0));
        for (int64_t k = 0; k < k2; ++k) {
          if (empty[k]) continue;
          for (int64_t gi = 0; gi < G; ++gi)
            axpy(corr[k * G + gi], samples.data() + k * C + gi * Cg, out + gi * Cg, Cg);
        }
      }
      scatter_row(g, orow.data(), b, step, h, y);
    }
  });
}

// Gradients of one pixel's K² samples, one fused pass over the channels per kernel position:
// d loss / d sample = w_k · grad_y + gc_k · q, scattered to the four corners of the key frame; the query
// gradient gc_k · sample; and, with `NEED_OFF`, Σ_c d loss / d sample · corner value for the offsets.
template <typename scalar_t, bool NEED_OFF>
inline void sample_grads(const scalar_t* __restrict__ s, const scalar_t* __restrict__ go,
                         const scalar_t* __restrict__ q, scalar_t wk, scalar_t gc, const scalar_t* const* v,
                         scalar_t* const* gv, const scalar_t* w, scalar_t* __restrict__ dq, int64_t n,
                         scalar_t* corner_dots) {
  const scalar_t* __restrict__ v0 = v[0];
  const scalar_t* __restrict__ v1 = v[1];
  const scalar_t* __restrict__ v2 = v[2];
  const scalar_t* __restrict__ v3 = v[3];
  scalar_t* __restrict__ g0 = gv[0];
  scalar_t* __restrict__ g1 = gv[1];
  scalar_t* __restrict__ g2 = gv[2];
  scalar_t* __restrict__ g3 = gv[3];
  const scalar_t w0 = w[0], w1 = w[1], w2 = w[2], w3 = w[3];
  scalar_t d0 = 0, d1 = 0, d2 = 0, d3 = 0;
#pragma omp simd reduction(+ : d0, d1, d2, d3)
  for (int64_t c = 0; c < n; ++c) {
    const scalar_t gs = wk * go[c] + gc * q[c];
    dq[c] += gc * s[c];
    g0[c] += w0 * gs;
    g1[c] += w1 * gs;
    g2[c] += w2 * gs;
    g3[c] += w3 * gs;
    if (NEED_OFF) {
      d0 += gs * v0[c];
      d1 += gs * v1[c];
      d2 += gs * v2[c];
      d3 += gs * v3[c];
    }
  }
  corner_dots[0] += d0;
  corner_dots[1] += d1;
  corner_dots[2] += d2;
  corner_dots[3] += d3;
}

template <typename scalar_t>
void backward_kernel(const Geometry& g, const scalar_t* x, const scalar_t* keys_cl, const scalar_t* off,
                     const scalar_t* grad_y, scalar_t* grad_x, scalar_t* grad_keys_cl, scalar_t* grad_off,
                     int64_t band) {
  const int64_t C = g.C, G = g.groups, Cg = g.cg(), k2 = g.k2(), S = g.steps(), hw = g.H * g.W;
  const scalar_t inv_c = scalar_t(1) / static_cast<scalar_t>(C);
  const scalar_t scale = static_cast<scalar_t>(g.scale());
  const int64_t n_bands = (g.H + band - 1) / band;
  for (int parity = 0; parity < 2; ++parity) {
    const int64_t bands_of_parity = (n_bands - parity + 1) / 2;
    const int64_t work = std::min(band, g.H) * g.W * C * k2 * 3;  // backward ≈ 3 forward passes
    at::parallel_for(0, g.B * S * bands_of_parity, grain(work), [&](int64_t begin, int64_t end) {
      std::vector<scalar_t> qrow(g.W * C), grow(g.W * C), dqrow(g.W * C), samples(k2 * C);
      std::vector<scalar_t> weight(k2 * G), grad_w(k2 * G), rows(k2), cols(k2);
      std::vector<Corners<scalar_t>> cs(k2);
      Scratch<scalar_t> scratch(C);
      for (int64_t task = begin; task < end; ++task) {
        const int64_t n = task / bands_of_parity, bi = 2 * (task % bands_of_parity) + parity;
        const int64_t b = n / S, step = n % S;
        const scalar_t* keys = keys_cl + n * hw * C;
        scalar_t* gkeys = grad_keys_cl + n * hw * C;
        for (int64_t h = bi * band; h < std::min(g.H, (bi + 1) * band); ++h) {
          gather_row(g, x, b, step, h, qrow.data());
          gather_row(g, grad_y, b, step, h, grow.data());
          for (int64_t w = 0; w < g.W; ++w) {
            const scalar_t* q = qrow.data() + w * C;
            const scalar_t* go = grow.data() + w * C;
            positions(g, off, b, step, h, w, rows.data(), cols.data());
            // Recompute the samples, their correlations and d loss / d weight.
            for (int64_t k = 0; k < k2; ++k) {
              cs[k] = corners(rows[k], cols[k], g.H, g.W, C);
              scalar_t* s = samples.data() + k * C;
              const scalar_t* v[4];
              for (int j = 0; j < 4; ++j) v[j] = scratch.value(cs[k], j, keys);
              for (int64_t gi = 0; gi < G; ++gi) {
                const int64_t c0 = gi * Cg;
                scalar_t dq = 0, dg = 0;
                sample_dot<scalar_t>(v[0] + c0, v[1] + c0, v[2] + c0, v[3] + c0, cs[k].weight, q + c0, go + c0,
                                     s + c0, Cg, dq, dg);
                weight[k * G + gi] = dq * inv_c;
                grad_w[k * G + gi] = dg;
              }
            }
            // grad_w becomes d loss / d (q · sample) = d loss / d correlation / C.
            normalize(g, weight.data());
            for (int64_t gi = 0; gi < G; ++gi) {
              scalar_t mean = 0;
              if (g.softmax)
                for (int64_t k = 0; k < k2; ++k) mean += weight[k * G + gi] * grad_w[k * G + gi];
              for (int64_t k = 0; k < k2; ++k) {
                scalar_t& gw = grad_w[k * G + gi];
                gw = g.softmax ? scale * weight[k * G + gi] * (gw - mean) * inv_c : gw * inv_c;
              }
            }
            scalar_t* dq = dqrow.data() + w * C;
            std::fill(dq, dq + C, scalar_t(0));
            for (int64_t k = 0; k < k2; ++k) {
              scalar_t corner_dots[4] = {0, 0, 0, 0};
              if (cs[k].any) {
                const scalar_t* v[4];
                scalar_t* gv[4];
                for (int j = 0; j < 4; ++j) {
                  v[j] = scratch.value(cs[k], j, keys);
                  gv[j] = scratch.grad(cs[k], j, gkeys, C);
                }
                for (int64_t gi = 0; gi < G; ++gi) {
                  const int64_t c0 = gi * Cg;
                  const scalar_t* vg[4] = {v[0] + c0, v[1] + c0, v[2] + c0, v[3] + c0};
                  scalar_t* gvg[4] = {gv[0] + c0, gv[1] + c0, gv[2] + c0, gv[3] + c0};
                  const scalar_t* s = samples.data() + k * C + c0;
                  const scalar_t wk = weight[k * G + gi], gc = grad_w[k * G + gi];
                  if (grad_off != nullptr)
                    sample_grads<scalar_t, true>(s, go + c0, q + c0, wk, gc, vg, gvg, cs[k].weight, dq + c0, Cg,
                                                 corner_dots);
                  else
                    sample_grads<scalar_t, false>(s, go + c0, q + c0, wk, gc, vg, gvg, cs[k].weight, dq + c0, Cg,
                                                  corner_dots);
                }
              }
              if (grad_off != nullptr) {
                scalar_t d_row = 0, d_col = 0;
                for (int j = 0; j < 4; ++j) {
                  d_row += cs[k].d_row[j] * corner_dots[j];
                  d_col += cs[k].d_col[j] * corner_dots[j];
                }
                const int64_t index = ((b * 2 * k2 + 2 * k) * S + step) * hw + h * g.W + w;
                grad_off[index] = d_row;
                grad_off[index + S * hw] = d_col;
              }
            }
          }
          scatter_row(g, dqrow.data(), b, step, h, grad_x);
        }
      }
    });
  }
}

Geometry geometry(const torch::Tensor& x, int64_t K, int64_t dilation, int64_t groups, bool softmax) {
  Geometry g;
  g.B = x.size(0);
  g.C = x.size(1);
  g.T = x.size(2);
  g.H = x.size(3);
  g.W = x.size(4);
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
  TORCH_CHECK(x.device().is_cpu() && x.dim() == 5 && x.size(2) >= 2, "sifa_cpu: x must be a (B, C, T>=2, H, W) CPU tensor");
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble, "sifa_cpu: float32 or float64 only");
  if (offsets.has_value()) {
    const auto& o = *offsets;
    TORCH_CHECK(o.scalar_type() == x.scalar_type() && o.dim() == 5 && o.size(0) == x.size(0) &&
                    o.size(1) == 2 * K * K && o.size(2) == x.size(2) - 1 && o.size(3) == x.size(3) &&
                    o.size(4) == x.size(4),
                "sifa_cpu: offsets must be (B, 2K², T-1, H, W) of x's dtype");
  }
}

torch::Tensor keys_channels_last(const torch::Tensor& x) {
  return x.narrow(2, 1, x.size(2) - 1).permute({0, 2, 3, 4, 1}).contiguous();  // (B, T-1, H, W, C)
}

}  // namespace

torch::Tensor sifa_forward(const torch::Tensor& x_in, const c10::optional<torch::Tensor>& offsets, int64_t K,
                           int64_t dilation, int64_t groups, bool softmax) {
  check_inputs(x_in, offsets, K);
  const auto x = x_in.contiguous();
  const auto off = offsets.has_value() ? offsets->contiguous() : torch::Tensor();
  const auto g = geometry(x, K, dilation, groups, softmax);
  const auto keys = keys_channels_last(x);
  auto y = torch::empty(x.sizes(), x.options());  // contiguous whatever the input layout (the fake says so)
  y.select(2, g.T - 1).zero_();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "sifa_forward", [&] {
    forward_kernel<scalar_t>(g, x.data_ptr<scalar_t>(), keys.data_ptr<scalar_t>(),
                             off.defined() ? off.data_ptr<scalar_t>() : nullptr, y.data_ptr<scalar_t>());
  });
  return y;
}

std::vector<torch::Tensor> sifa_backward(const torch::Tensor& grad_y_in, const torch::Tensor& x_in,
                                         const c10::optional<torch::Tensor>& offsets, int64_t K,
                                         int64_t dilation, int64_t groups, bool softmax, bool need_offsets) {
  check_inputs(x_in, offsets, K);
  const auto x = x_in.contiguous();
  const auto grad_y = grad_y_in.to(x.scalar_type()).contiguous();
  const auto off = offsets.has_value() ? offsets->contiguous() : torch::Tensor();
  const auto g = geometry(x, K, dilation, groups, softmax);
  const auto keys = keys_channels_last(x);
  auto grad_x = torch::empty(x.sizes(), x.options());
  grad_x.select(2, g.T - 1).zero_();  // frame T-1 is never a query
  auto grad_keys = torch::zeros_like(keys);
  need_offsets = need_offsets && off.defined();
  auto grad_off = need_offsets ? torch::empty(off.sizes(), off.options()) : x.new_empty({0});
  // Band height: rows of a band scatter into rows [top - P - M, bottom + d(K-1) - P + M + 1].
  int64_t band = g.H;
  const double reach = off.defined() ? off.view({g.B, g.k2(), 2, -1}).select(2, 0).abs().max().item<double>() : 0;
  if (reach < static_cast<double>(g.H))
    band = std::min(g.H, g.dilation * (g.K - 1) + 2 * static_cast<int64_t>(std::ceil(reach)) + 2);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "sifa_backward", [&] {
    backward_kernel<scalar_t>(g, x.data_ptr<scalar_t>(), keys.data_ptr<scalar_t>(),
                              off.defined() ? off.data_ptr<scalar_t>() : nullptr, grad_y.data_ptr<scalar_t>(),
                              grad_x.data_ptr<scalar_t>(), grad_keys.data_ptr<scalar_t>(),
                              need_offsets ? grad_off.data_ptr<scalar_t>() : nullptr, band);
  });
  grad_x.narrow(2, 1, g.T - 1).add_(grad_keys.permute({0, 4, 1, 2, 3}));
  return {grad_x, grad_off};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &sifa_forward, "SIFA forward (CPU)");
  m.def("backward", &sifa_backward, "SIFA backward (CPU)");
}
