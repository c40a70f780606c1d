// Deep-Emotion's inference forward for uint8 48x48 faces, in one C++ call: normalise, attention
// branch, affine grid + bilinear sampling, classifier, softmax.  Built on first use by
// fer_sweep.models.native (torch.utils.cpp_extension, -O3 -march=native); BatchNorm comes folded into
// conv4.  Why: for one face the TorchScript graph spends much of its time between ~60 small ATen ops;
// here the activations (~400 KB per thread in all, none over 90 KB) stay in the L2 cache and no op is dispatched.
// Vectors are 16 floats where the target has AVX-512, else 8; the convolutions (about 80% of the time)
// run near the FMA units' peak, conv2 (the largest) with its pool by Winograd's F(2x2, 3x3), the affine
// sampling is vectorised and branch-free, and the fully connected layers sum in vector lanes.
// Computes the same as DeepEmotion.reference_forward in eval mode (tests/test_native.py), with sums
// in another order: probabilities within ~1e-5.
#include <torch/extension.h>
#include <cmath>
#include <vector>
#include <algorithm>
#include <thread>

#if defined(__SSE__)
#include <xmmintrin.h>
#include <pmmintrin.h>
#endif

// flush-to-zero and denormals-are-zero for the scope of one call, restored on every exit
struct FlushDenormals {
#if defined(__SSE__)
  unsigned int saved = _mm_getcsr();
  FlushDenormals() { _mm_setcsr(saved | 0x8040); }
  ~FlushDenormals() { _mm_setcsr(saved); }
#endif
};

// Activations are planes of `rows` rows with a row stride S (the input's width: a convolution keeps
// its input's stride and leaves K-1 columns of garbage at the right of each row, so that every plane
// is one contiguous run that vectorises without remainders), each plane padded to a multiple of 64
// floats (one tile).  Garbage columns and padding are finite (buffers start zeroed) and never reach a valid value.
constexpr int TILE = 64;
constexpr int SLACK = 128;  // floats after the last plane of every buffer, for the vector loads that run past it
constexpr int plane(int rows, int S) { return (rows * S + TILE - 1) / TILE * TILE; }

// the widest vector the target has: 16 floats with AVX-512, else 8 (AVX2 or plain SSE: GCC splits them)
#if defined(__AVX512F__)
constexpr int VW = 16;
#else
constexpr int VW = 8;
#endif
typedef float vec __attribute__((vector_size(VW * 4)));
static inline vec loadu(const float* p) { vec v; __builtin_memcpy(&v, p, sizeof v); return v; }
static inline void storeu(float* p, vec v) { __builtin_memcpy(p, &v, sizeof v); }

// output channels x position vectors that accumulate together: as many as the registers hold beside the
// inputs (AVX-512's 32 registers: 5 channels x 4 vectors of 16 = 20 accumulators; AVX2's 16: 5 x 2 vectors
// of 8 = 10), so that each input vector loaded serves several channels and each broadcast weight several
// vectors.  With the vectorised sampling and FC layers below, this took the whole network on an AVX-512
// Intel Xeon from ~3,300 to ~10,000 faces/s on one core, and an -march=haswell (AVX2) build on the same
// machine from ~4,300 to ~5,000-6,400 (alternating rounds; benchmarks/inference_speed.py has the real figures)
constexpr int out_block(int O) { return O % 5 == 0 ? 5 : O % 4 == 0 ? 4 : O % 2 == 0 ? 2 : 1; }
constexpr int pos_vecs(int OB) { return VW == 16 || OB < 4 ? 4 : 2; }

// valid (no padding) stride-1 convolution of C planes (H rows, stride S) into O planes (H-K+1 rows,
// stride S): OB output channels x PV*VW positions accumulate in registers over all C*K*K taps
template <int C, int H, int S, int O, int K, int R = H - K + 1>
static void conv(const float* __restrict in, const float* __restrict w, const float* __restrict b, float* __restrict out) {
  static_assert(R >= 1 && R <= H - K + 1, "output rows within the valid ones");
  constexpr int Ho = R, P = Ho * S, PI = plane(H, S), PO = plane(Ho, S), OB = out_block(O), PV = pos_vecs(OB), T = PV * VW;
  static_assert(O % OB == 0 && TILE % T == 0, "whole blocks of channels and positions");
  // the last tile reads up to (K-1)*S + K-1 + PO - 1 past its plane's start: within the slack
  static_assert((K - 1) * S + K - 1 + PO - PI <= SLACK, "vector loads would run past the buffer");
  for (int o = 0; o < O; o += OB) {
    const float* wo = w + o * C * K * K;
    for (int p0 = 0; p0 < P; p0 += T) {
      vec acc[OB][PV];
#pragma GCC unroll 8
      for (int j = 0; j < OB; ++j)
#pragma GCC unroll 8
        for (int v = 0; v < PV; ++v) acc[j][v] = vec{} + b[o + j];
      for (int c = 0; c < C; ++c) {
        const float* src = in + c * PI + p0;
        const float* wc = wo + c * K * K;
        for (int ky = 0; ky < K; ++ky)
#pragma GCC unroll 8
          for (int kx = 0; kx < K; ++kx) {
            const float* r = src + ky * S + kx;
            vec x[PV];
#pragma GCC unroll 8
            for (int v = 0; v < PV; ++v) x[v] = loadu(r + v * VW);
#pragma GCC unroll 8
            for (int j = 0; j < OB; ++j) {
              const float wt = wc[j * C * K * K + ky * K + kx];
#pragma GCC unroll 8
              for (int v = 0; v < PV; ++v) acc[j][v] += wt * x[v];
            }
          }
      }
#pragma GCC unroll 8
      for (int j = 0; j < OB; ++j)
#pragma GCC unroll 8
        for (int v = 0; v < PV; ++v) storeu(out + (o + j) * PO + p0 + v * VW, acc[j][v]);
    }
  }
}

template <int C, int H, int S>
static void relu(float* p) {
  for (int i = 0; i < C * plane(H, S); ++i) p[i] = p[i] > 0.f ? p[i] : 0.f;
}

// 2x2 max-pool (floor) of the valid W columns of C planes (H rows, stride S), then ReLU; output planes
// of H/2 rows, stride W/2, padded (PAD) or packed (for the fully connected layer that follows)
template <int C, int H, int S, int W, bool PAD>
static void pool2_relu(const float* __restrict in, float* __restrict out) {
  constexpr int Ho = H / 2, Wo = W / 2, PI = plane(H, S), PO = PAD ? plane(Ho, Wo) : Ho * Wo;
  for (int c = 0; c < C; ++c)
    for (int y = 0; y < Ho; ++y) {
      const float* r0 = in + c * PI + 2 * y * S;
      const float* r1 = r0 + S;
      float* o = out + c * PO + y * Wo;
      for (int x = 0; x < Wo; ++x) {
        float m = std::max(std::max(r0[2 * x], r0[2 * x + 1]), std::max(r1[2 * x], r1[2 * x + 1]));
        o[x] = m > 0.f ? m : 0.f;
      }
    }
}

// fully connected layer: each dot product in two vector accumulators (a scalar sum would wait on the
// previous addition at every step), then across the lanes
static void linear(const float* __restrict in, int I, const float* __restrict w, const float* __restrict b, int O, float* __restrict out, bool relu) {
  for (int o = 0; o < O; ++o) {
    const float* wr = w + (size_t)o * I;
    vec s0 = {}, s1 = {};
    int i = 0;
    for (; i + 2 * VW <= I; i += 2 * VW) {
      s0 += loadu(wr + i) * loadu(in + i);
      s1 += loadu(wr + i + VW) * loadu(in + i + VW);
    }
    for (; i + VW <= I; i += VW) s0 += loadu(wr + i) * loadu(in + i);
    s0 += s1;
    float s = 0.f;
    for (int l = 0; l < VW; ++l) s += s0[l];
    for (; i < I; ++i) s += wr[i] * in[i];
    s += b[o];
    out[o] = (relu && s < 0.f) ? 0.f : s;
  }
}

// bilinear grid_sample, zeros padding, align_corners=False, of a 1-channel HxW image with the affine grid of
// theta.  `pad` is the image inside a zero border of 2 pixels ((H+4) x (W+4)).  Source coordinates are clamped
// to [-1, W] (the cast of a huge or non-finite value would be undefined; NaN goes to -1): a sample outside
// that range has only taps in the zero border, and so has its clamped one (at -1 the weight of pixel 0 is 0,
// at W both taps are border), so all four taps are in the buffer, there is no branch, and nothing changes.
template <int H, int W>
static void affine_sample(const float* __restrict pad, const float* th, float* __restrict out) {
  constexpr int PW = W + 4;
  static_assert(W % VW == 0, "whole vectors per row");
  typedef int vint __attribute__((vector_size(VW * 4)));
  float xs[W];  // the base grid's x coordinates, as ATen computes them
  for (int j = 0; j < W; ++j) xs[j] = (2.f * j + 1.f) / W - 1.f;
  for (int i = 0; i < H; ++i) {
    const float ys = (2.f * i + 1.f) / H - 1.f;
    for (int j0 = 0; j0 < W; j0 += VW) {
      const vec x = loadu(xs + j0);
      const vec gx = th[0] * x + (th[1] * ys + th[2]);
      const vec gy = th[3] * x + (th[4] * ys + th[5]);
      vec ix = ((gx + 1.f) * (float)W - 1.f) / 2.f, iy = ((gy + 1.f) * (float)H - 1.f) / 2.f;
      ix = !(ix >= -1.f) ? vec{} - 1.f : ix > (float)W ? vec{} + (float)W : ix;
      iy = !(iy >= -1.f) ? vec{} - 1.f : iy > (float)H ? vec{} + (float)H : iy;
      vint xi = __builtin_convertvector(ix, vint), yi = __builtin_convertvector(iy, vint);  // truncation,
      vec fx = __builtin_convertvector(xi, vec), fy = __builtin_convertvector(yi, vec);      // then floor:
      const vint bx = fx > ix, by = fy > iy;  // -1 where truncation went up (negative values)
      xi += bx; yi += by;
      fx += __builtin_convertvector(bx, vec); fy += __builtin_convertvector(by, vec);
      const vec dx = ix - fx, dy = iy - fy;
      const vint at = (yi + 2) * PW + (xi + 2);
      vec q00, q01, q10, q11;
      for (int l = 0; l < VW; ++l) {
        const float* q = pad + at[l];
        q00[l] = q[0]; q01[l] = q[1]; q10[l] = q[PW]; q11[l] = q[PW + 1];
      }
      storeu(out + i * W + j0, q00 * (1.f - dx) * (1.f - dy) + q01 * dx * (1.f - dy) + q10 * (1.f - dx) * dy + q11 * dx * dy);
    }
  }
}

// conv2 (10 -> 10 channels, 3x3) with its 2x2 max-pool and ReLU, by Winograd's F(2x2, 3x3): each 2x2 block of
// outputs (exactly one pooling window) comes from a 4x4 input tile with 16 multiplications per channel pair
// instead of 36, so conv2, the largest layer (~45% of the multiplications), costs less than half.  Why tiles
// line up with vectors: the ReLU'd conv1 output is first split by row and column parity into four 23x23
// planes (stride 23), so that input (2ty+i, 2tx+j) of tile t = 23ty+tx sits at plane (i%2, j%2), offset
// t + 23(i/2) + j/2 -- the same offsets for every tile, so VW consecutive tiles are VW consecutive floats
// (tx = 22 is a junk tile; 506 tiles padded to 512).  The pooled output keeps the tile order: 22 rows, stride 23.
// Transforms as in Lavin & Gray (arXiv 1509.09308); the filter transform U = G g G^T is made once, in double.
namespace wino {
constexpr int Q = 23, NT = 512, QP = 544;  // parity plane side, tiles (padded), parity plane size (>= NT + Q + 1)
constexpr int CH = 32;                     // tiles per chunk: its transformed inputs and products stay in L1
constexpr int C = 10, O = 10;
static_assert(NT % CH == 0 && CH % (2 * VW) == 0, "whole chunks of whole vector pairs");

// ReLU of conv1's 46x46 output (stride 48) into parity planes q[c][a][b] (23x23, stride 23)
static void split_relu(const float* __restrict in, float* __restrict q) {
  constexpr int PI = plane(46, 48);
  for (int c = 0; c < C; ++c)
    for (int a = 0; a < 2; ++a)
      for (int b = 0; b < 2; ++b) {
        float* dst = q + (c * 4 + a * 2 + b) * QP;
        for (int u = 0; u < Q; ++u) {
          const float* r = in + c * PI + (2 * u + a) * 48 + b;
          for (int v = 0; v < Q; ++v) { const float x = r[2 * v]; dst[u * Q + v] = x > 0.f ? x : 0.f; }
        }
      }
}

// U[xi][o][c] = (G g G^T)[xi] for the 3x3 filters g = w[o][c]
static std::vector<float> filter_transform(const float* w) {
  static const double G[4][3] = {{1, 0, 0}, {.5, .5, .5}, {.5, -.5, .5}, {0, 0, 1}};
  std::vector<float> U(16 * O * C);
  for (int o = 0; o < O; ++o)
    for (int c = 0; c < C; ++c) {
      const float* g = w + (o * C + c) * 9;
      double Gg[4][3];
      for (int i = 0; i < 4; ++i)
        for (int k = 0; k < 3; ++k) Gg[i][k] = G[i][0] * g[k] + G[i][1] * g[3 + k] + G[i][2] * g[6 + k];
      for (int i = 0; i < 4; ++i)
        for (int j = 0; j < 4; ++j) U[((i * 4 + j) * O + o) * C + c] = (float)(Gg[i][0] * G[j][0] + Gg[i][1] * G[j][1] + Gg[i][2] * G[j][2]);
    }
  return U;
}

// pooled (max of the 2x2 block, plus bias, ReLU) conv2 output: O planes of 22 rows, stride 23 (plane(22, 23))
static void conv_pool_relu(const float* __restrict q, const float* __restrict U, const float* __restrict bias,
                           float* __restrict vb, float* __restrict mb, float* __restrict out) {
  constexpr int PO = plane(22, Q);
  static_assert(PO >= NT, "every tile's pooled value has its place");
  for (int t0 = 0; t0 < NT; t0 += CH) {
    // input transform V = B^T d B, B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1]; vb[xi][c][CH]
    for (int c = 0; c < C; ++c)
      for (int v = 0; v < CH; v += VW) {
        const float* qc = q + c * 4 * QP + t0 + v;
        vec d[4][4], r[4][4];
#pragma GCC unroll 4
        for (int i = 0; i < 4; ++i)
#pragma GCC unroll 4
          for (int j = 0; j < 4; ++j) d[i][j] = loadu(qc + ((i & 1) * 2 + (j & 1)) * QP + (i >> 1) * Q + (j >> 1));
#pragma GCC unroll 4
        for (int j = 0; j < 4; ++j) {
          r[0][j] = d[0][j] - d[2][j]; r[1][j] = d[1][j] + d[2][j]; r[2][j] = d[2][j] - d[1][j]; r[3][j] = d[1][j] - d[3][j];
        }
#pragma GCC unroll 4
        for (int i = 0; i < 4; ++i) {
          float* o = vb + (i * 4 * C + c) * CH + v;
          storeu(o, r[i][0] - r[i][2]); storeu(o + C * CH, r[i][1] + r[i][2]);
          storeu(o + 2 * C * CH, r[i][2] - r[i][1]); storeu(o + 3 * C * CH, r[i][1] - r[i][3]);
        }
      }
    // products M[o][xi] = sum_c U[xi][o][c] V[xi][c]: 5 channels x 2 vectors in registers; mb[o][xi][CH]
    for (int xi = 0; xi < 16; ++xi)
      for (int o = 0; o < O; o += 5)
        for (int v = 0; v < CH; v += 2 * VW) {
          vec acc[5][2] = {};
          for (int c = 0; c < C; ++c) {
            const float* x = vb + (xi * C + c) * CH + v;
            const vec x0 = loadu(x), x1 = loadu(x + VW);
#pragma GCC unroll 5
            for (int j = 0; j < 5; ++j) {
              const float u = U[(xi * O + o + j) * C + c];
              acc[j][0] += u * x0; acc[j][1] += u * x1;
            }
          }
#pragma GCC unroll 5
          for (int j = 0; j < 5; ++j) {
            storeu(mb + ((o + j) * 16 + xi) * CH + v, acc[j][0]);
            storeu(mb + ((o + j) * 16 + xi) * CH + v + VW, acc[j][1]);
          }
        }
    // output transform Y = A^T M A, A^T = [1 1 1 0; 0 1 -1 -1], then the pool: max of Y's four, bias, ReLU
    for (int o = 0; o < O; ++o)
      for (int v = 0; v < CH; v += VW) {
        const float* m = mb + o * 16 * CH + v;
        vec s[2][4];
#pragma GCC unroll 4
        for (int j = 0; j < 4; ++j) {
          const vec m0 = loadu(m + j * CH), m1 = loadu(m + (4 + j) * CH), m2 = loadu(m + (8 + j) * CH), m3 = loadu(m + (12 + j) * CH);
          s[0][j] = m0 + m1 + m2; s[1][j] = m1 - m2 - m3;
        }
        vec best = vec{} - INFINITY;
#pragma GCC unroll 2
        for (int i = 0; i < 2; ++i) {
          const vec y0 = s[i][0] + s[i][1] + s[i][2], y1 = s[i][1] - s[i][2] - s[i][3];
          best = best > y0 ? best : y0;
          best = best > y1 ? best : y1;
        }
        best += bias[o];
        storeu(out + o * PO + t0 + v, best > 0.f ? best : vec{});
      }
  }
}
}  // namespace wino

// per-thread activations, zeroed once (SLACK floats for the vector loads past the last plane);
// what a call leaves in them is finite and overwritten before the next call reads it
struct Buffers {
  static std::vector<float> buf(int n) { return std::vector<float>(n + SLACK, 0.f); }
  std::vector<float> x = buf(plane(48, 48)), xpad = buf(52 * 52), a = buf(8 * plane(42, 48)), a2 = buf(8 * plane(21, 21)), a3 = buf(10 * plane(17, 21)),
      a4 = buf(640), h = buf(32), th = buf(6), s = buf(plane(48, 48)), c1 = buf(10 * plane(46, 48)),
      q = buf(10 * 4 * wino::QP), vb = buf(16 * 10 * wino::CH), mb = buf(10 * 16 * wino::CH),
      p2 = buf(10 * plane(22, 23)), c3 = buf(10 * plane(20, 23)), c4 = buf(10 * plane(18, 23)), p4 = buf(810), f1 = buf(50);
};

// One network: its parameters (localization.0.{weight,bias}, localization.3.*, fc_loc.0.*, fc_loc.2.*,
// conv1.*, conv2.*, conv3.*, conv4.* with BatchNorm folded in, fc1.*, fc2.*: 20 contiguous float32 CPU
// tensors of Deep-Emotion's shapes, checked once here) and the input normalisation.
struct Net {
  std::vector<torch::Tensor> p;
  std::vector<const float*> P;
  std::vector<float> U2;  // conv2's Winograd-transformed filters
  float mean, sd;
  int ncls;

  Net(std::vector<torch::Tensor> params, double mean_, double std_) : p(std::move(params)), mean((float)mean_), sd((float)std_) {
    static const int64_t numel[20] = {8 * 49, 8, 10 * 8 * 25, 10, 32 * 640, 32, 6 * 32, 6, 10 * 9, 10, 10 * 90, 10, 10 * 90, 10, 10 * 90, 10, 50 * 810, 50, -1, -1};
    TORCH_CHECK_VALUE(p.size() == 20, "expected Deep-Emotion's 20 parameter tensors, got ", p.size());
    TORCH_CHECK_VALUE(p[18].dim() == 2 && p[18].size(1) == 50 && p[18].size(0) >= 1 && p[18].size(0) <= 64 && p[19].numel() == p[18].size(0),
                      "fc2 must be (classes, 50) with 1-64 classes");
    for (int i = 0; i < 20; ++i) {
      TORCH_CHECK_VALUE(p[i].device().is_cpu() && p[i].dtype() == torch::kFloat32 && p[i].is_contiguous(), "parameters must be contiguous float32 CPU tensors");
      TORCH_CHECK_VALUE(numel[i] < 0 || p[i].numel() == numel[i], "parameter ", i, " has ", p[i].numel(), " values, expected ", numel[i]);
      P.push_back(p[i].data_ptr<float>());
    }
    ncls = (int)p[18].size(0);
    U2 = wino::filter_transform(P[10]);
  }

  torch::Tensor proba(torch::Tensor faces) const;
};

torch::Tensor Net::proba(torch::Tensor faces) const {
  if (faces.dim() == 4 && faces.size(1) == 1) faces = faces.select(1, 0);
  TORCH_CHECK_VALUE(faces.device().is_cpu() && faces.dtype() == torch::kUInt8 && faces.dim() == 3 && faces.size(1) == 48 && faces.size(2) == 48,
                    "faces must be (N, 48, 48) uint8 on the CPU, got ", faces.sizes(), " ", faces.dtype(), " on ", faces.device());
  faces = faces.contiguous();
  const int N = (int)faces.size(0);
  auto result = torch::empty({N, ncls}, torch::kFloat32);
  static thread_local Buffers B;
  float* x = B.x.data(); float* xpad = B.xpad.data(); float* a = B.a.data(); float* a2 = B.a2.data(); float* a3 = B.a3.data(); float* a4 = B.a4.data();
  float* h = B.h.data(); float* th = B.th.data(); float* s = B.s.data(); float* c1 = B.c1.data();
  float* q = B.q.data(); float* vb = B.vb.data(); float* mb = B.mb.data();
  float* p2 = B.p2.data(); float* c3 = B.c3.data(); float* c4 = B.c4.data(); float* p4 = B.p4.data(); float* f1 = B.f1.data();
  float lg[64];
  const uint8_t* src = faces.data_ptr<uint8_t>();
  float* dst = result.data_ptr<float>();
  const float scale = 1.f / 255.f, m = mean;
  FlushDenormals ftz;  // subnormals (none in the shipped weights; possible in garbage columns) at full speed
  for (int n = 0; n < N; ++n) {
    const uint8_t* f = src + (size_t)n * 2304;
    for (int i = 0; i < 2304; ++i) x[i] = (f[i] * scale - m) / sd;
    for (int i = 0; i < 48; ++i) std::copy(x + i * 48, x + i * 48 + 48, xpad + (i + 2) * 52 + 2);  // the border stays 0
    conv<1, 48, 48, 8, 7>(x, P[0], P[1], a);          // 42 valid rows x 42 columns
    pool2_relu<8, 42, 48, 42, true>(a, a2);            // 21 x 21
    conv<8, 21, 21, 10, 5, 16>(a2, P[2], P[3], a3);    // 16 of the 17 x 17 rows (the pool drops the 17th)
    pool2_relu<10, 17, 21, 17, false>(a3, a4);         // 8 x 8, packed: 640
    linear(a4, 640, P[4], P[5], 32, h, true);
    linear(h, 32, P[6], P[7], 6, th, false);
    affine_sample<48, 48>(xpad, th, s);
    conv<1, 48, 48, 10, 3>(s, P[8], P[9], c1);         // 46 x 46
    wino::split_relu(c1, q);                           // ReLU, 4 parity planes of 23 x 23
    wino::conv_pool_relu(q, U2.data(), P[11], vb, mb, p2);  // conv2 44 x 44, pooled: 22 x 22, stride 23
    conv<10, 22, 23, 10, 3>(p2, P[12], P[13], c3);     // 20 x 20
    relu<10, 20, 23>(c3);
    conv<10, 20, 23, 10, 3>(c3, P[14], P[15], c4);     // 18 x 18
    pool2_relu<10, 18, 23, 18, false>(c4, p4);         // 9 x 9, packed: 810
    linear(p4, 810, P[16], P[17], 50, f1, true);
    linear(f1, 50, P[18], P[19], ncls, lg, false);
    float mx = *std::max_element(lg, lg + ncls), tot = 0.f;
    for (int k = 0; k < ncls; ++k) { lg[k] = std::exp(lg[k] - mx); tot += lg[k]; }
    for (int k = 0; k < ncls; ++k) dst[(size_t)n * ncls + k] = lg[k] / tot;
  }
  return result;
}

// ---------------------------------------------------------------------------------------------------------
// Training: the features stage (attention branch, affine sampling, conv1-conv4, up to conv4's output before
// BatchNorm, whose batch statistics couple the faces) forward and backward, for float32 (N, 1, 48, 48) input.
// Why: a training step of this small network spends most of its time in oneDNN convolutions whose shapes
// (1-10 channels, 3x3-7x7) fill vectors poorly, plus ~40 small ATen ops between them; here each face runs
// through every layer with its activations in the cache, each convolution (forward, input gradient as a
// forward convolution of the zero-padded gradient with the flipped filters, weight gradient) with its
// channels x positions in vector registers, and the batch's faces split over threads, each summing its own
// weight gradients (added in thread order: deterministic for a given thread count).  The localisation
// layers' backward visits only the max-pools' winners (`pooled_conv_back`: a quarter of the positions or
// fewer), not a dense convolution over the zeros between them.  What the forward
// keeps per face (`saved`, ~170 KB): the input, the activations the backward reads, and each max-pool's
// choice (uint8: 0-3, the first maximum in scan order as ATen picks it).
namespace train {
constexpr int F_X = 0, F_XPAD = F_X + 2304, F_A2 = F_XPAD + 52 * 52, F_A4 = F_A2 + 8 * plane(21, 21), F_H = F_A4 + 640,
              F_TH = F_H + 32, F_S = F_TH + 8, F_C1 = F_S + 2304, F_P2 = F_C1 + 10 * plane(46, 48), F_C3 = F_P2 + 10 * plane(22, 22),
              F_END = F_C3 + 10 * plane(20, 22), FLOATS = (F_END + TILE - 1) / TILE * TILE;
constexpr int B_A = 0, B_A3 = B_A + 8 * 21 * 21, B_C2 = B_A3 + 10 * 8 * 8, BYTES = B_C2 + 10 * 22 * 22;
constexpr int NP = 16;  // parameters: localization.0.{weight,bias}, localization.3.*, fc_loc.0.*, fc_loc.2.*, conv1-4.*
static const int64_t NUMEL[NP] = {8 * 49, 8, 10 * 8 * 25, 10, 32 * 640, 32, 6 * 32, 6, 10 * 9, 10, 10 * 90, 10, 10 * 90, 10, 10 * 90, 10};

// 2x2 max-pool (floor) of the valid W columns of C planes (H rows, stride S), then ReLU, into planes of stride SO
// and size PO (padding and columns past W/2 zeroed when PO > 0; packed when PO == 0), and which of the four won
template <int C, int H, int S, int W, int SO, int PO>
static void pool_relu_arg(const float* __restrict in, float* __restrict out, uint8_t* __restrict idx) {
  constexpr int Ho = H / 2, Wo = W / 2, PI = plane(H, S), PS = PO > 0 ? PO : Ho * Wo;
  if (PO > 0) std::fill(out, out + C * PS, 0.f);
  for (int c = 0; c < C; ++c)
    for (int y = 0; y < Ho; ++y) {
      const float* r0 = in + c * PI + 2 * y * S;
      const float* r1 = r0 + S;
      for (int x = 0; x < Wo; ++x) {
        const float v[4] = {r0[2 * x], r0[2 * x + 1], r1[2 * x], r1[2 * x + 1]};
        int k = 0;
        for (int j = 1; j < 4; ++j) if (v[j] > v[k]) k = j;
        out[c * PS + y * SO + x] = v[k] > 0.f ? v[k] : 0.f;
        idx[(c * Ho + y) * Wo + x] = (uint8_t)k;
      }
    }
}

// the gradient of pool_relu_arg: each pooled value's gradient (where it is > 0: the ReLU) goes to the input
// position that won; `gin` (C planes, H rows, stride S, size PI) is zeroed first (garbage columns included)
template <int C, int H, int S, int W, int SO, int PO>
static void pool_relu_back(const float* __restrict gout, const float* __restrict pooled, const uint8_t* __restrict idx, float* __restrict gin) {
  constexpr int Ho = H / 2, Wo = W / 2, PI = plane(H, S), PS = PO > 0 ? PO : Ho * Wo;
  std::fill(gin, gin + C * PI, 0.f);
  for (int c = 0; c < C; ++c)
    for (int y = 0; y < Ho; ++y)
      for (int x = 0; x < Wo; ++x) {
        const int o = c * PS + y * SO + x;
        if (!(pooled[o] > 0.f)) continue;
        const int k = idx[(c * Ho + y) * Wo + x];
        gin[c * PI + (2 * y + (k >> 1)) * S + 2 * x + (k & 1)] = gout[o];
      }
}

// the valid Wo x Ho values of C planes (stride SI, size PI) where `keep` (same layout) is > 0 (a ReLU's output;
// nullptr: all), into planes of stride S, size plane(Ho, S), at column/row offset D: zero elsewhere.  D = 0
// gives the layout the weight gradient reads; D = K - 1 and S = Wo + 2(K - 1) the zero-padded gradient whose
// forward convolution with the flipped filters is the input gradient.
template <int C, int Ho, int Wo, int SI, int PI, int S, int R, int D>
static void place(const float* __restrict g, const float* __restrict keep, float* __restrict out) {
  constexpr int PO = plane(R, S);
  static_assert(D + Wo <= S && D + Ho <= R, "values inside the destination plane");
  std::fill(out, out + C * PO, 0.f);
  for (int c = 0; c < C; ++c)
    for (int y = 0; y < Ho; ++y)
      for (int x = 0; x < Wo; ++x) {
        const int i = c * PI + y * SI + x;
        if (keep == nullptr || keep[i] > 0.f) out[c * PO + (y + D) * S + x + D] = g[i];
      }
}

// register budget of the weight gradient: OB output channels x K taps of one filter row accumulate
// while OB gradient vectors and one input vector are loaded
constexpr int NREG = VW == 16 ? 32 : 16;
constexpr int wg_block(int O, int K) {
  for (int d = O; d > 1; --d)
    if (O % d == 0 && d * K + d + 1 <= NREG) return d;
  return 1;
}
static inline float hsum(vec v) { float s = 0.f; for (int l = 0; l < VW; ++l) s += v[l]; return s; }

// dW[o][c][ky][kx] += sum_p g[o][p] in[c][p + ky S + kx] and db[o] += sum_p g[o][p], over the flat layout of the
// convolution's output (Ho rows, stride S: garbage columns and padding of g are zero, so they add nothing)
template <int C, int H, int S, int O, int K, int Ho>
static void wgrad(const float* __restrict in, const float* __restrict g, float* __restrict dw, float* __restrict db) {
  constexpr int PI = plane(H, S), PG = plane(Ho, S), P = (Ho * S + VW - 1) / VW * VW, OB = wg_block(O, K);
  static_assert(P <= PG && (K - 1) * S + K - 1 + P - PI <= SLACK, "reads within the planes and the slack");
  for (int o = 0; o < O; ++o) {
    vec s = {};
    for (int p = 0; p < P; p += VW) s += loadu(g + o * PG + p);
    db[o] += hsum(s);
  }
  for (int o = 0; o < O; o += OB)
    for (int c = 0; c < C; ++c)
      for (int ky = 0; ky < K; ++ky) {
        vec acc[OB][K];
#pragma GCC unroll 8
        for (int j = 0; j < OB; ++j)
#pragma GCC unroll 8
          for (int kx = 0; kx < K; ++kx) acc[j][kx] = vec{};
        const float* r = in + c * PI + ky * S;
        for (int p = 0; p < P; p += VW) {
          vec gv[OB];
#pragma GCC unroll 8
          for (int j = 0; j < OB; ++j) gv[j] = loadu(g + (o + j) * PG + p);
#pragma GCC unroll 8
          for (int kx = 0; kx < K; ++kx) {
            const vec x = loadu(r + p + kx);
#pragma GCC unroll 8
            for (int j = 0; j < OB; ++j) acc[j][kx] += gv[j] * x;
          }
        }
#pragma GCC unroll 8
        for (int j = 0; j < OB; ++j)
#pragma GCC unroll 8
          for (int kx = 0; kx < K; ++kx) dw[(((o + j) * C + c) * K + ky) * K + kx] += hsum(acc[j][kx]);
      }
}

// The gradients of a valid stride-1 convolution (C -> O channels, K x K; input planes of stride S, size PI) that a
// 2x2 max-pool (floor) and a ReLU follow, from the pooled gradient (Ho x Wo, stride SO, plane size PS) and the
// forward's choices: only the winner of each window whose pooled value is > 0 has a gradient, at most one
// position in four, so the weight gradient sums K rows of K taps over those positions alone and the input
// gradient (when `din` is given: C planes like the input, zeroed here) adds each one's filter rows, instead of
// two dense convolutions over zeros (the localisation layers: 4x fewer operations).  Filter rows are one vector
// each (K <= VW): `wrows[o][c][ky]` holds them zero-padded to VW, the lanes past K read neighbours and are dropped.
template <int C, int S, int PI, int O, int K, int Ho, int Wo, int SO, int PS>
static void pooled_conv_back(const float* __restrict in, const float* __restrict wrows, const float* __restrict gout, const float* __restrict pooled,
                             const uint8_t* __restrict idx, float* __restrict dw, float* __restrict db, float* __restrict din) {
  static_assert(K <= VW, "one filter row per vector");
  static_assert((C - 1) * PI + (2 * Ho - 1) * S + 2 * Wo - 1 + (K - 1) * S + VW <= C * PI + SLACK, "row vectors within the buffer and its slack");
  if (din != nullptr) std::fill(din, din + C * PI, 0.f);
  float gl[Ho * Wo];
  int rl[Ho * Wo];
  for (int o = 0; o < O; ++o) {
    int m = 0;
    float gs = 0.f;
    for (int y = 0; y < Ho; ++y)
      for (int x = 0; x < Wo; ++x) {
        const int i = o * PS + y * SO + x;
        if (!(pooled[i] > 0.f)) continue;
        const int k = idx[(o * Ho + y) * Wo + x];
        gl[m] = gout[i];
        rl[m++] = (2 * y + (k >> 1)) * S + 2 * x + (k & 1);
        gs += gout[i];
      }
    db[o] += gs;
    for (int c = 0; c < C; ++c) {
      const float* ic = in + c * PI;
      vec acc[K];
#pragma GCC unroll 8
      for (int ky = 0; ky < K; ++ky) acc[ky] = vec{};
      for (int j = 0; j < m; ++j) {
        const float g = gl[j];
        const float* r = ic + rl[j];
#pragma GCC unroll 8
        for (int ky = 0; ky < K; ++ky) acc[ky] += g * loadu(r + ky * S);
      }
      float* dwc = dw + (o * C + c) * K * K;
#pragma GCC unroll 8
      for (int ky = 0; ky < K; ++ky)
        for (int kx = 0; kx < K; ++kx) dwc[ky * K + kx] += acc[ky][kx];
      if (din == nullptr) continue;
      vec wr[K];
#pragma GCC unroll 8
      for (int ky = 0; ky < K; ++ky) wr[ky] = loadu(wrows + ((o * C + c) * K + ky) * VW);
      float* dc = din + c * PI;
      for (int j = 0; j < m; ++j) {
        const float g = gl[j];
        float* r = dc + rl[j];
#pragma GCC unroll 8
        for (int ky = 0; ky < K; ++ky) storeu(r + ky * S, loadu(r + ky * S) + g * wr[ky]);
      }
    }
  }
}

// w[o][c][ky][kx] -> rows[o][c][ky][0..VW), zero past K: pooled_conv_back's filter rows
static std::vector<float> filter_rows(const float* w, int O, int C, int K) {
  std::vector<float> r((size_t)O * C * K * VW, 0.f);
  for (int i = 0; i < O * C * K; ++i) std::copy(w + i * K, w + i * K + K, r.begin() + (size_t)i * VW);
  return r;
}

// w[o][c][ky][kx] -> f[c][o][K-1-ky][K-1-kx]: the filters of the input gradient as a forward convolution
static std::vector<float> flipped(const float* w, int O, int C, int K) {
  std::vector<float> f((size_t)O * C * K * K);
  for (int o = 0; o < O; ++o)
    for (int c = 0; c < C; ++c)
      for (int i = 0; i < K * K; ++i) f[((size_t)c * O + o) * K * K + (K * K - 1 - i)] = w[((size_t)o * C + c) * K * K + i];
  return f;
}

// the input gradient of a valid stride-1 convolution (C -> O channels, K x K, output Ho x Wo) from g placed
// zero-padded (place<..., D = K-1>: Ho + 2(K-1) rows, stride Wo + 2(K-1)): out has Ho + K - 1 rows, same stride
template <int O, int Ho, int Wo, int C, int K>
static void dgrad(const float* __restrict gpad, const float* __restrict wflip, const float* __restrict zeros, float* __restrict out) {
  conv<O, Ho + 2 * (K - 1), Wo + 2 * (K - 1), C, K>(gpad, wflip, zeros, out);
}

// bilinear sampling's gradient with respect to theta (grid_sample, zeros padding, align_corners=False, through
// the affine grid): the forward's coordinates recomputed; a coordinate affine_sample clamped (outside [-1, W])
// samples only zeros and has no gradient
static void affine_sample_back(const float* __restrict pad, const float* th, const float* __restrict gs, int gstride, float* dth) {
  constexpr int H = 48, W = 48, PW = W + 4;
  double t[6] = {0, 0, 0, 0, 0, 0};
  for (int i = 0; i < H; ++i) {
    const float ys = (2.f * i + 1.f) / H - 1.f;
    float rx = 0.f, ry = 0.f, rxx = 0.f, ryx = 0.f;  // this row's sums of gx', gy', gx' xs, gy' xs
    for (int j = 0; j < W; ++j) {
      const float g = gs[i * gstride + j];
      if (g == 0.f) continue;
      const float x = (2.f * j + 1.f) / W - 1.f;
      const float gx = th[0] * x + (th[1] * ys + th[2]), gy = th[3] * x + (th[4] * ys + th[5]);
      const float ix = ((gx + 1.f) * (float)W - 1.f) / 2.f, iy = ((gy + 1.f) * (float)H - 1.f) / 2.f;
      if (!(ix >= -1.f && ix <= (float)W && iy >= -1.f && iy <= (float)H)) continue;
      const float fx = std::floor(ix), fy = std::floor(iy), dx = ix - fx, dy = iy - fy;
      const float* q = pad + ((int)fy + 2) * PW + ((int)fx + 2);
      const float q00 = q[0], q01 = q[1], q10 = q[PW], q11 = q[PW + 1];
      const float gix = g * ((q01 - q00) * (1.f - dy) + (q11 - q10) * dy) * (W / 2.f);
      const float giy = g * ((q10 - q00) * (1.f - dx) + (q11 - q01) * dx) * (H / 2.f);
      rx += gix; ry += giy; rxx += gix * x; ryx += giy * x;
    }
    t[0] += rxx; t[1] += (double)rx * ys; t[2] += rx; t[3] += ryx; t[4] += (double)ry * ys; t[5] += ry;
  }
  for (int k = 0; k < 6; ++k) dth[k] = (float)t[k];
}

static void check_params(const std::vector<torch::Tensor>& p) {
  TORCH_CHECK_VALUE(p.size() == NP, "expected Deep-Emotion's ", NP, " feature-stage parameter tensors, got ", p.size());
  for (int i = 0; i < NP; ++i)
    TORCH_CHECK_VALUE(p[i].device().is_cpu() && p[i].dtype() == torch::kFloat32 && p[i].is_contiguous() && p[i].numel() == NUMEL[i],
                      "parameter ", i, " must be a contiguous float32 CPU tensor of ", NUMEL[i], " values");
}

// fn(t, n0, n1): faces [n0, n1) of the batch as part t of T.  Built with OpenMP (Linux), the parts run on
// PyTorch's own OpenMP threads (at::parallel_for; the extension shares torch's libgomp): threads of our own
// would compete with those, which spin for a while after each ATen op (a forward took 37 instead of 28 ms)
template <typename Fn>
static void split(int N, int threads, Fn fn) {
  const int T = std::max(1, std::min(threads, N));
#ifdef _OPENMP
  at::parallel_for(0, T, 1, [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t) fn((int)t, (int)((int64_t)N * t / T), (int)((int64_t)N * (t + 1) / T));
  });
  return;
#endif
  std::vector<std::thread> pool;
  for (int t = 1; t < T; ++t) pool.emplace_back(fn, t, (int)((int64_t)N * t / T), (int)((int64_t)N * (t + 1) / T));
  fn(0, 0, (int)((int64_t)N / T));
  for (auto& th : pool) th.join();
}

// x (N, 1, 48, 48) float32 -> (conv4's output (N, 10, 18, 18) before BatchNorm, saved floats, saved bytes)
static std::vector<torch::Tensor> forward(torch::Tensor x, std::vector<torch::Tensor> params, int64_t threads) {
  check_params(params);
  TORCH_CHECK_VALUE(x.device().is_cpu() && x.dtype() == torch::kFloat32 && x.dim() == 4 && x.size(1) == 1 && x.size(2) == 48 && x.size(3) == 48,
                    "x must be (N, 1, 48, 48) float32 on the CPU, got ", x.sizes(), " ", x.dtype(), " on ", x.device());
  x = x.contiguous();
  const int N = (int)x.size(0);
  auto out = torch::empty({N, 10, 18, 18}, torch::kFloat32);
  auto saved = torch::empty({(int64_t)N * FLOATS + SLACK}, torch::kFloat32);
  auto choice = torch::empty({N, BYTES}, torch::kUInt8);
  std::vector<const float*> P;
  for (auto& t : params) P.push_back(t.data_ptr<float>());
  float* sv = saved.data_ptr<float>();
  std::fill(sv + (size_t)N * FLOATS, sv + (size_t)N * FLOATS + SLACK, 0.f);
  const float* src = x.data_ptr<float>();
  float* dst = out.data_ptr<float>();
  uint8_t* ch = choice.data_ptr<uint8_t>();
  split(N, (int)threads, [&](int, int n0, int n1) {
    FlushDenormals ftz;
    std::vector<float> a(8 * plane(42, 48) + SLACK, 0.f), a3(10 * plane(16, 21) + SLACK, 0.f), c2(10 * plane(44, 48) + SLACK, 0.f), c4(10 * plane(18, 22) + SLACK, 0.f);
    for (int n = n0; n < n1; ++n) {
      float* f = sv + (size_t)n * FLOATS;
      uint8_t* b = ch + (size_t)n * BYTES;
      std::copy(src + (size_t)n * 2304, src + (size_t)(n + 1) * 2304, f + F_X);
      float* xpad = f + F_XPAD;
      std::fill(xpad, xpad + 52 * 52, 0.f);
      for (int i = 0; i < 48; ++i) std::copy(f + F_X + i * 48, f + F_X + i * 48 + 48, xpad + (i + 2) * 52 + 2);
      conv<1, 48, 48, 8, 7>(f + F_X, P[0], P[1], a.data());
      pool_relu_arg<8, 42, 48, 42, 21, plane(21, 21)>(a.data(), f + F_A2, b + B_A);
      conv<8, 21, 21, 10, 5, 16>(f + F_A2, P[2], P[3], a3.data());
      pool_relu_arg<10, 17, 21, 17, 8, 0>(a3.data(), f + F_A4, b + B_A3);
      linear(f + F_A4, 640, P[4], P[5], 32, f + F_H, true);
      linear(f + F_H, 32, P[6], P[7], 6, f + F_TH, false);
      affine_sample<48, 48>(xpad, f + F_TH, f + F_S);
      conv<1, 48, 48, 10, 3>(f + F_S, P[8], P[9], f + F_C1);
      relu<10, 46, 48>(f + F_C1);
      conv<10, 46, 48, 10, 3>(f + F_C1, P[10], P[11], c2.data());
      pool_relu_arg<10, 44, 48, 44, 22, plane(22, 22)>(c2.data(), f + F_P2, b + B_C2);
      conv<10, 22, 22, 10, 3>(f + F_P2, P[12], P[13], f + F_C3);
      relu<10, 20, 22>(f + F_C3);
      conv<10, 20, 22, 10, 3>(f + F_C3, P[14], P[15], c4.data());
      for (int c = 0; c < 10; ++c)
        for (int y = 0; y < 18; ++y) std::copy(c4.data() + c * plane(18, 22) + y * 22, c4.data() + c * plane(18, 22) + y * 22 + 18, dst + ((size_t)(n * 10 + c) * 18 + y) * 18);
    }
  });
  return {out, saved, choice};
}

// the gradients of the 16 parameters from the gradient of conv4's output (N, 10, 18, 18)
static std::vector<torch::Tensor> backward(torch::Tensor grad, torch::Tensor saved, torch::Tensor choice, std::vector<torch::Tensor> params, int64_t threads) {
  check_params(params);
  const int N = (int)choice.size(0);
  TORCH_CHECK_VALUE(grad.device().is_cpu() && grad.dtype() == torch::kFloat32 && grad.dim() == 4 && grad.size(0) == N && grad.size(1) == 10 && grad.size(2) == 18 && grad.size(3) == 18,
                    "grad must be (", N, ", 10, 18, 18) float32 on the CPU, got ", grad.sizes());
  TORCH_CHECK_VALUE(saved.numel() == (int64_t)N * FLOATS + SLACK && choice.size(1) == BYTES && saved.is_contiguous() && choice.is_contiguous(), "saved tensors do not match the batch");
  grad = grad.contiguous();
  std::vector<const float*> P;
  for (auto& t : params) P.push_back(t.data_ptr<float>());
  const std::vector<float> f1 = flipped(P[8], 10, 1, 3), f2 = flipped(P[10], 10, 10, 3), f3 = flipped(P[12], 10, 10, 3), f4 = flipped(P[14], 10, 10, 3);
  const std::vector<float> wl = filter_rows(P[2], 10, 8, 5);
  const std::vector<float> zeros(16, 0.f);
  const float* sv = saved.data_ptr<float>();
  const uint8_t* ch = choice.data_ptr<uint8_t>();
  const float* g4 = grad.data_ptr<float>();
  const int T = std::max(1, std::min((int)threads, N));
  int64_t total = 0;
  int64_t off[NP + 1];
  for (int i = 0; i < NP; ++i) { off[i] = total; total += NUMEL[i]; }
  off[NP] = total;
  std::vector<std::vector<float>> acc(T, std::vector<float>(total, 0.f));
  split(N, T, [&](int t, int n0, int n1) {
    FlushDenormals ftz;
    float* d = acc[t].data();
    auto buf = [](int n) { return std::vector<float>(n + SLACK, 0.f); };
    std::vector<float> G4 = buf(10 * plane(18, 22)), GP4 = buf(10 * plane(22, 22)), D3 = buf(10 * plane(20, 22)), G3 = buf(10 * plane(20, 22)),
        GP3 = buf(10 * plane(24, 24)), D2 = buf(10 * plane(22, 24)), G2P = buf(10 * plane(22, 22)), G2 = buf(10 * plane(44, 48)), GP2 = buf(10 * plane(48, 48)),
        D1 = buf(10 * plane(46, 48)), G1 = buf(10 * plane(46, 48)), GP1 = buf(10 * plane(50, 50)), DS = buf(plane(48, 50)),
        A2M = buf(8 * plane(21, 21)), da4 = buf(640);
    for (int n = n0; n < n1; ++n) {
      const float* f = sv + (size_t)n * FLOATS;
      const uint8_t* b = ch + (size_t)n * BYTES;
      const float* g = g4 + (size_t)n * 3240;
      // conv4
      place<10, 18, 18, 18, 324, 22, 18, 0>(g, nullptr, G4.data());
      place<10, 18, 18, 18, 324, 22, 22, 2>(g, nullptr, GP4.data());
      wgrad<10, 20, 22, 10, 3, 18>(f + F_C3, G4.data(), d + off[14], d + off[15]);
      dgrad<10, 18, 18, 10, 3>(GP4.data(), f4.data(), zeros.data(), D3.data());  // 20 rows, stride 22
      // conv3 (its ReLU: c3 > 0)
      place<10, 20, 20, 22, plane(20, 22), 22, 20, 0>(D3.data(), f + F_C3, G3.data());
      place<10, 20, 20, 22, plane(20, 22), 24, 24, 2>(D3.data(), f + F_C3, GP3.data());
      wgrad<10, 22, 22, 10, 3, 20>(f + F_P2, G3.data(), d + off[12], d + off[13]);
      dgrad<10, 20, 20, 10, 3>(GP3.data(), f3.data(), zeros.data(), D2.data());  // 22 rows, stride 24
      // pool 2 and its ReLU, then conv2
      place<10, 22, 22, 24, plane(22, 24), 22, 22, 0>(D2.data(), nullptr, G2P.data());  // repacked to the pool's stride 22
      pool_relu_back<10, 44, 48, 44, 22, plane(22, 22)>(G2P.data(), f + F_P2, b + B_C2, G2.data());
      place<10, 44, 44, 48, plane(44, 48), 48, 48, 2>(G2.data(), nullptr, GP2.data());
      wgrad<10, 46, 48, 10, 3, 44>(f + F_C1, G2.data(), d + off[10], d + off[11]);
      dgrad<10, 44, 44, 10, 3>(GP2.data(), f2.data(), zeros.data(), D1.data());  // 46 rows, stride 48
      // conv1 (its ReLU: c1 > 0)
      place<10, 46, 46, 48, plane(46, 48), 48, 46, 0>(D1.data(), f + F_C1, G1.data());
      place<10, 46, 46, 48, plane(46, 48), 50, 50, 2>(D1.data(), f + F_C1, GP1.data());
      wgrad<1, 48, 48, 10, 3, 46>(f + F_S, G1.data(), d + off[8], d + off[9]);
      dgrad<10, 46, 46, 1, 3>(GP1.data(), f1.data(), zeros.data(), DS.data());  // 48 rows, stride 50
      // the sampling, then the localisation network's fully connected layers
      float dth[6], dh[32];
      affine_sample_back(f + F_XPAD, f + F_TH, DS.data(), 50, dth);
      const float* h = f + F_H;
      for (int k = 0; k < 6; ++k) {
        d[off[7] + k] += dth[k];
        for (int j = 0; j < 32; ++j) d[off[6] + k * 32 + j] += dth[k] * h[j];
      }
      for (int j = 0; j < 32; ++j) {
        float s = 0.f;
        for (int k = 0; k < 6; ++k) s += P[6][k * 32 + j] * dth[k];
        dh[j] = h[j] > 0.f ? s : 0.f;
      }
      const float* a4 = f + F_A4;
      std::fill(da4.begin(), da4.end(), 0.f);
      for (int j = 0; j < 32; ++j) {
        if (dh[j] == 0.f) continue;
        d[off[5] + j] += dh[j];
        float* dw = d + off[4] + j * 640;
        const float* w = P[4] + j * 640;
        for (int i = 0; i < 640; ++i) { dw[i] += dh[j] * a4[i]; da4[i] += w[i] * dh[j]; }
      }
      // pool and ReLU, localisation conv2 (16 rows: the pool drops the 17th), then pool and ReLU, localisation
      // conv1 (its input gradient is not needed): only the pools' winners
      pooled_conv_back<8, 21, plane(21, 21), 10, 5, 8, 8, 8, 64>(f + F_A2, wl.data(), da4.data(), a4, b + B_A3, d + off[2], d + off[3], A2M.data());
      pooled_conv_back<1, 48, 2304, 8, 7, 21, 21, 21, plane(21, 21)>(f + F_X, nullptr, A2M.data(), f + F_A2, b + B_A, d + off[0], d + off[1], nullptr);
    }
  });
  std::vector<torch::Tensor> grads;
  for (int i = 0; i < NP; ++i) {
    auto gt = torch::empty(params[i].sizes(), torch::kFloat32);
    float* o = gt.data_ptr<float>();
    for (int64_t k = 0; k < NUMEL[i]; ++k) {
      float s = 0.f;
      for (int t = 0; t < T; ++t) s += acc[t][off[i] + k];
      o[k] = s;
    }
    grads.push_back(gt);
  }
  return grads;
}
}  // namespace train

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  py::class_<Net>(m, "Net", py::module_local())  // local: two builds of this source can share a process
      .def(py::init<std::vector<torch::Tensor>, double, double>())
      .def("proba", &Net::proba, py::call_guard<py::gil_scoped_release>());
  m.def("train_forward", &train::forward, py::call_guard<py::gil_scoped_release>());
  m.def("train_backward", &train::backward, py::call_guard<py::gil_scoped_release>());
}
