// Deep-Emotion's inference forward for uint8 48x48 faces, in one C++ call: normalise, attention
// branch, affine grid + bilinear sampling, classifier, softmax.  Built on first use by
// fer_sweep.models.native (torch.utils.cpp_extension, -O3 -march=native); BatchNorm comes folded into
// conv4.  Why: for one face the TorchScript graph spends much of its time between ~60 small ATen ops;
// here the activations (~350 KB per thread in all, none over 90 KB) stay in the L2 cache and no op is dispatched.
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
// is one contiguous run that vectorises without remainders), each plane padded to a multiple of 32
// floats.  Garbage columns and padding are finite (buffers start zeroed) and never reach a valid value.
constexpr int plane(int rows, int S) { return (rows * S + 31) / 32 * 32; }

typedef float v8 __attribute__((vector_size(32)));
static inline v8 loadu(const float* p) { v8 v; __builtin_memcpy(&v, p, sizeof v); return v; }
static inline void storeu(float* p, v8 v) { __builtin_memcpy(p, &v, sizeof v); }

// valid (no padding) stride-1 convolution of C planes (H rows, stride S) into O planes (H-K+1 rows,
// stride S): two output channels x 32 positions accumulate in registers over all C*K*K taps
template <int C, int H, int S, int O, int K>
static void conv(const float* __restrict in, const float* __restrict w, const float* __restrict b, float* __restrict out) {
  constexpr int Ho = H - K + 1, P = Ho * S, PI = plane(H, S), PO = plane(Ho, S);
  static_assert(O % 2 == 0, "two output channels at a time");
  // the last tile reads up to (K-1)*S + K-1 + PO - 1 past its plane's start: within the 64 floats of slack
  static_assert((K - 1) * S + K - 1 + PO - PI <= 64, "vector loads would run past the buffer");
  for (int o = 0; o < O; o += 2) {
    const float* w0 = w + o * C * K * K;
    const float* w1 = w0 + C * K * K;
    for (int p0 = 0; p0 < P; p0 += 32) {
      v8 a0 = {}, a1 = {}, a2 = {}, a3 = {}, b0 = {}, b1 = {}, b2 = {}, b3 = {};
      a0 += b[o]; a1 += b[o]; a2 += b[o]; a3 += b[o];
      b0 += b[o + 1]; b1 += b[o + 1]; b2 += b[o + 1]; b3 += b[o + 1];
      for (int c = 0; c < C; ++c) {
        const float* src = in + c * PI + p0;
        const float* wa = w0 + c * K * K;
        const float* wb = w1 + c * K * K;
        for (int ky = 0; ky < K; ++ky)
          for (int kx = 0; kx < K; ++kx) {
            const float* r = src + ky * S + kx;
            const float x = wa[ky * K + kx], y = wb[ky * K + kx];
            const v8 i0 = loadu(r), i1 = loadu(r + 8), i2 = loadu(r + 16), i3 = loadu(r + 24);
            a0 += x * i0; a1 += x * i1; a2 += x * i2; a3 += x * i3;
            b0 += y * i0; b1 += y * i1; b2 += y * i2; b3 += y * i3;
          }
      }
      float* d0 = out + o * PO + p0;
      float* d1 = d0 + PO;
      storeu(d0, a0); storeu(d0 + 8, a1); storeu(d0 + 16, a2); storeu(d0 + 24, a3);
      storeu(d1, b0); storeu(d1 + 8, b1); storeu(d1 + 16, b2); storeu(d1 + 24, b3);
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

static void linear(const float* in, int I, const float* w, const float* b, int O, float* out, bool relu) {
  for (int o = 0; o < O; ++o) {
    const float* wr = w + (size_t)o * I;
    float s = 0.f;
    for (int i = 0; i < I; ++i) s += wr[i] * in[i];
    s += b[o];
    out[o] = (relu && s < 0.f) ? 0.f : s;
  }
}

// bilinear grid_sample, zeros padding, align_corners=False, of a 1-channel HxW image with the affine grid of theta
static void affine_sample(const float* img, int H, int W, const float* th, float* out) {
  for (int i = 0; i < H; ++i) {
    const float ys = (2.f * i + 1.f) / H - 1.f;
    for (int j = 0; j < W; ++j) {
      const float xs = (2.f * j + 1.f) / W - 1.f;
      const float gx = th[0] * xs + th[1] * ys + th[2];
      const float gy = th[3] * xs + th[4] * ys + th[5];
      const float ix = ((gx + 1.f) * W - 1.f) / 2.f;
      const float iy = ((gy + 1.f) * H - 1.f) / 2.f;
      // clamped first (the cast of a huge or non-finite value is undefined); outside [-1, W] every tap is zero anyway
      const float cx = std::fmin(std::fmax(ix, -2.f), (float)W + 1.f), cy = std::fmin(std::fmax(iy, -2.f), (float)H + 1.f);
      const int x0 = (int)std::floor(cx), y0 = (int)std::floor(cy);
      const float dx = cx - x0, dy = cy - y0;
      float v = 0.f;
      auto at = [&](int yy, int xx) { return (yy >= 0 && yy < H && xx >= 0 && xx < W) ? img[yy * W + xx] : 0.f; };
      v = at(y0, x0) * (1.f - dx) * (1.f - dy) + at(y0, x0 + 1) * dx * (1.f - dy) + at(y0 + 1, x0) * (1.f - dx) * dy + at(y0 + 1, x0 + 1) * dx * dy;
      out[i * W + j] = v;
    }
  }
}

// per-thread activations, zeroed once (64 floats of slack for the vector loads past the last plane);
// what a call leaves in them is finite and overwritten before the next call reads it
struct Buffers {
  static std::vector<float> buf(int n) { return std::vector<float>(n + 64, 0.f); }
  std::vector<float> x = buf(plane(48, 48)), a = buf(8 * plane(42, 48)), a2 = buf(8 * plane(21, 21)), a3 = buf(10 * plane(17, 21)),
      a4 = buf(640), h = buf(32), th = buf(6), s = buf(plane(48, 48)), c1 = buf(10 * plane(46, 48)), c2 = buf(10 * plane(44, 48)),
      p2 = buf(10 * plane(22, 22)), c3 = buf(10 * plane(20, 22)), c4 = buf(10 * plane(18, 22)), p4 = buf(810), f1 = buf(50);
};

// One network: its parameters (localization.0.{weight,bias}, localization.3.*, fc_loc.0.*, fc_loc.2.*,
// conv1.*, conv2.*, conv3.*, conv4.* with BatchNorm folded in, fc1.*, fc2.*: 20 contiguous float32 CPU
// tensors of Deep-Emotion's shapes, checked once here) and the input normalisation.
struct Net {
  std::vector<torch::Tensor> p;
  std::vector<const float*> P;
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
  float* x = B.x.data(); float* a = B.a.data(); float* a2 = B.a2.data(); float* a3 = B.a3.data(); float* a4 = B.a4.data();
  float* h = B.h.data(); float* th = B.th.data(); float* s = B.s.data(); float* c1 = B.c1.data(); float* c2 = B.c2.data();
  float* p2 = B.p2.data(); float* c3 = B.c3.data(); float* c4 = B.c4.data(); float* p4 = B.p4.data(); float* f1 = B.f1.data();
  float lg[64];
  const uint8_t* src = faces.data_ptr<uint8_t>();
  float* dst = result.data_ptr<float>();
  const float scale = 1.f / 255.f, m = mean;
  FlushDenormals ftz;  // subnormals (none in the shipped weights; possible in garbage columns) at full speed
  for (int n = 0; n < N; ++n) {
    const uint8_t* f = src + (size_t)n * 2304;
    for (int i = 0; i < 2304; ++i) x[i] = (f[i] * scale - m) / sd;
    conv<1, 48, 48, 8, 7>(x, P[0], P[1], a);          // 42 valid rows x 42 columns
    pool2_relu<8, 42, 48, 42, true>(a, a2);            // 21 x 21
    conv<8, 21, 21, 10, 5>(a2, P[2], P[3], a3);        // 17 x 17
    pool2_relu<10, 17, 21, 17, false>(a3, a4);         // 8 x 8, packed: 640
    linear(a4, 640, P[4], P[5], 32, h, true);
    linear(h, 32, P[6], P[7], 6, th, false);
    affine_sample(x, 48, 48, th, s);
    conv<1, 48, 48, 10, 3>(s, P[8], P[9], c1);         // 46 x 46
    relu<10, 46, 48>(c1);
    conv<10, 46, 48, 10, 3>(c1, P[10], P[11], c2);     // 44 x 44
    pool2_relu<10, 44, 48, 44, true>(c2, p2);          // 22 x 22
    conv<10, 22, 22, 10, 3>(p2, P[12], P[13], c3);     // 20 x 20
    relu<10, 20, 22>(c3);
    conv<10, 20, 22, 10, 3>(c3, P[14], P[15], c4);     // 18 x 18
    pool2_relu<10, 18, 22, 18, false>(c4, p4);         // 9 x 9, packed: 810
    linear(p4, 810, P[16], P[17], 50, f1, true);
    linear(f1, 50, P[18], P[19], ncls, lg, false);
    float mx = *std::max_element(lg, lg + ncls), tot = 0.f;
    for (int k = 0; k < ncls; ++k) { lg[k] = std::exp(lg[k] - mx); tot += lg[k]; }
    for (int k = 0; k < ncls; ++k) dst[(size_t)n * ncls + k] = lg[k] / tot;
  }
  return result;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  py::class_<Net>(m, "Net")
      .def(py::init<std::vector<torch::Tensor>, double, double>())
      .def("proba", &Net::proba, py::call_guard<py::gil_scoped_release>());
}
