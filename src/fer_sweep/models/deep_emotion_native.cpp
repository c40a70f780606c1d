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

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  py::class_<Net>(m, "Net", py::module_local())  // local: two builds of this source can share a process
      .def(py::init<std::vector<torch::Tensor>, double, double>())
      .def("proba", &Net::proba, py::call_guard<py::gil_scoped_release>());
}
