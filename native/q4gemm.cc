// The int4 matmul of q4gemm.h: activation quantization, a scalar reference kernel and an
// AVX-512 VNNI kernel chosen at run time (the addon builds for any x86-64 or other CPU).
#include "q4gemm.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#define GSQ4_X86 1
#endif

namespace gsq4 {

namespace {

constexpr int kBlock = 32;
constexpr int kGroupBlocks = 4;
constexpr int kGroupQ = kGroupBlocks * kBlock;  // int8 of one group of one row
constexpr int kLanes = 16;                      // int32/float lanes of one group of one row
constexpr int kPanel = 4;                       // columns a packed panel interleaves
constexpr int kPanelGroupBytes = kPanel * 64 + kPanel * 16;  // weights, then scales, of a group

std::atomic<bool> g_force_scalar{false};

bool HasVnni() {
#ifdef GSQ4_X86
  static const bool has = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                          __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni");
  return has;
#else
  return false;
#endif
}

bool UseVnni() { return HasVnni() && !g_force_scalar.load(std::memory_order_relaxed); }

// The scalar kernel: the definition, from the same quantized rows.
void GemmColumnsScalar(const QuantizedRows& a, const uint8_t* w, const float* sw, int64_t blocks,
                       int64_t n0, int64_t n1, float* c, int64_t ldc) {
  for (int64_t m = 0; m < a.rows; m++) {
    const int8_t* q = a.q.data() + m * a.groups * kGroupQ;
    const float* sa = a.scale.data() + m * a.groups * kLanes;
    for (int64_t n = n0; n < n1; n++) {
      float acc = 0.f;
      for (int64_t b = 0; b < blocks; b++) {
        const int64_t g = b / kGroupBlocks;
        const int64_t j = b % kGroupBlocks;
        const int8_t* even = q + g * kGroupQ + j * 16;
        const int8_t* odd = even + 64;
        const uint8_t* packed = w + (n * blocks + b) * 16;
        int32_t dot = 0;
        for (int i = 0; i < 16; i++) {
          dot += even[i] * ((packed[i] & 0x0F) - 8);
          dot += odd[i] * ((packed[i] >> 4) - 8);
        }
        acc += static_cast<float>(dot) * (sa[g * kLanes + j * 4] * sw[n * blocks + b]);
      }
      c[m * ldc + n] = acc;
    }
  }
}

#ifndef GSQ4_PF
#define GSQ4_PF 4
#endif
#ifdef GSQ4_X86
// One tile of R rows × one panel (kPanel columns) of C, over all groups. The panel's weights are
// one sequential stream (Pack); each column group is one 64-byte load, low and high nibbles as
// two u8 vectors; each row's dot is two dpbusd started from the zero-point correction, then
// scaled per lane by sa · sw and accumulated in float.
template <int R>
__attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni"))) void Tile(
    const QuantizedRows& a, int64_t m0, const PackedWeights& w, int64_t panel, float* c, int64_t ldc) {
  constexpr int C = kPanel;
  const int64_t groups = a.groups;
  const __m512i nibble = _mm512_set1_epi8(0x0F);
  const __m512i spread = _mm512_set_epi32(3, 3, 3, 3, 2, 2, 2, 2, 1, 1, 1, 1, 0, 0, 0, 0);
  __m512 acc[R][C];
#pragma GCC unroll 4
  for (int r = 0; r < R; r++) {
#pragma GCC unroll 4
    for (int j = 0; j < C; j++) acc[r][j] = _mm512_setzero_ps();
  }
  const int8_t* q0 = a.q.data() + m0 * groups * kGroupQ;
  const int32_t* corr0 = a.corr.data() + m0 * groups * kLanes;
  const float* sa0 = a.scale.data() + m0 * groups * kLanes;
  const uint8_t* base = w.data + panel * groups * kPanelGroupBytes;
  for (int64_t g = 0; g < groups; g++, base += kPanelGroupBytes) {
    __m512i lo[C], hi[C];
    __m512 sb[C];
#pragma GCC unroll 5
    for (int l = 0; l < kPanelGroupBytes / 64; l++) {
      _mm_prefetch(reinterpret_cast<const char*>(base + GSQ4_PF * kPanelGroupBytes + l * 64), _MM_HINT_T0);
    }
#pragma GCC unroll 4
    for (int j = 0; j < C; j++) {
      const __m512i raw = _mm512_load_si512(base + j * 64);
      lo[j] = _mm512_and_si512(raw, nibble);
      hi[j] = _mm512_and_si512(_mm512_srli_epi16(raw, 4), nibble);
      const __m128 s4 = _mm_load_ps(reinterpret_cast<const float*>(base + C * 64 + j * 16));
      sb[j] = _mm512_permutexvar_ps(spread, _mm512_castps128_ps512(s4));
    }
#pragma GCC unroll 4
    for (int r = 0; r < R; r++) {
      const int8_t* q = q0 + (r * groups + g) * kGroupQ;
      const __m512i even = _mm512_loadu_si512(q);
      const __m512i odd = _mm512_loadu_si512(q + 64);
      const __m512i corr = _mm512_loadu_si512(corr0 + (r * groups + g) * kLanes);
      const __m512 sa = _mm512_loadu_ps(sa0 + (r * groups + g) * kLanes);
#pragma GCC unroll 4
      for (int j = 0; j < C; j++) {
        __m512i d = _mm512_dpbusd_epi32(corr, lo[j], even);
        d = _mm512_dpbusd_epi32(d, hi[j], odd);
        acc[r][j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(d), _mm512_mul_ps(sa, sb[j]), acc[r][j]);
      }
    }
  }
  const int64_t n0 = panel * C;
  const int cols = static_cast<int>(std::min<int64_t>(C, w.n - n0));
#pragma GCC unroll 4
  for (int r = 0; r < R; r++) {
#pragma GCC unroll 4
    for (int j = 0; j < C; j++) {
      if (j < cols) c[(m0 + r) * ldc + n0 + j] = _mm512_reduce_add_ps(acc[r][j]);
    }
  }
}

void GemmPanelsVnni(const QuantizedRows& a, const PackedWeights& w, int64_t p0, int64_t p1, float* c, int64_t ldc) {
  // Panels in chunks whose weights stay in L2 while every row tile passes over them.
  const int64_t chunk = std::max<int64_t>(1, (128 * 1024) / (a.groups * kPanelGroupBytes));
  for (int64_t c0 = p0; c0 < p1; c0 += chunk) {
    const int64_t c1 = std::min(p1, c0 + chunk);
    int64_t m = 0;
    for (; m + 4 <= a.rows; m += 4) {
      for (int64_t p = c0; p < c1; p++) Tile<4>(a, m, w, p, c, ldc);
    }
    for (int64_t p = c0; p < c1; p++) {
      switch (a.rows - m) {
        case 3: Tile<3>(a, m, w, p, c, ldc); break;
        case 2: Tile<2>(a, m, w, p, c, ldc); break;
        case 1: Tile<1>(a, m, w, p, c, ldc); break;
        default: break;
      }
    }
  }
}
#endif

}  // namespace

void Resize(QuantizedRows* out, int64_t rows, int64_t blocks) {
  out->rows = rows;
  out->groups = (blocks + kGroupBlocks - 1) / kGroupBlocks;
  const size_t g = static_cast<size_t>(rows * out->groups);
  if (out->q.size() < g * kGroupQ) out->q.resize(g * kGroupQ);
  if (out->corr.size() < g * kLanes) out->corr.resize(g * kLanes);
  if (out->scale.size() < g * kLanes) out->scale.resize(g * kLanes);
}

void QuantizeRows(const float* a, int64_t k, int64_t blocks, int64_t r0, int64_t r1, QuantizedRows* out) {
  const int64_t groups = out->groups;
  for (int64_t m = r0; m < r1; m++) {
    const float* row = a + m * k;
    int8_t* q = out->q.data() + m * groups * kGroupQ;
    int32_t* corr = out->corr.data() + m * groups * kLanes;
    float* scale = out->scale.data() + m * groups * kLanes;
    std::memset(q, 0, static_cast<size_t>(groups) * kGroupQ);
    std::memset(corr, 0, static_cast<size_t>(groups) * kLanes * sizeof(int32_t));
    std::memset(scale, 0, static_cast<size_t>(groups) * kLanes * sizeof(float));
    for (int64_t b = 0; b < blocks; b++) {
      const int64_t k0 = b * kBlock;
      const int64_t n = std::min<int64_t>(kBlock, k - k0);
      float amax = 0.f;
      for (int64_t i = 0; i < n; i++) amax = std::max(amax, std::fabs(row[k0 + i]));
      const float sa = amax / 127.f;
      const float inv = amax != 0.f ? 127.f / amax : 0.f;
      const int64_t g = b / kGroupBlocks;
      const int64_t j = b % kGroupBlocks;
      int8_t* gq = q + g * kGroupQ;
      int32_t sum = 0;
      for (int64_t i = 0; i < n; i++) {
        const int v = static_cast<int>(std::nearbyint(row[k0 + i] * inv));
        const int8_t qi = static_cast<int8_t>(std::clamp(v, -127, 127));
        sum += qi;
        // element 2t goes with the low nibble of byte t, 2t+1 with its high nibble
        gq[(i & 1) * 64 + j * 16 + (i >> 1)] = qi;
      }
      for (int l = 0; l < 4; l++) {
        corr[g * kLanes + j * 4 + l] = -2 * sum;
        scale[g * kLanes + j * 4 + l] = sa;
      }
    }
  }
}

PackedWeights::~PackedWeights() { std::free(data); }

bool Pack(const uint8_t* w, const float* sw, int64_t n, int64_t blocks, PackedWeights* out) {
  if (!HasVnni()) return false;
  const int64_t groups = (blocks + kGroupBlocks - 1) / kGroupBlocks;
  const int64_t panels = (n + kPanel - 1) / kPanel;
  const size_t bytes = static_cast<size_t>(panels * groups * kPanelGroupBytes);
  auto* data = static_cast<uint8_t*>(std::aligned_alloc(64, bytes));
  if (data == nullptr) return false;
  std::memset(data, 0, bytes);
  for (int64_t col = 0; col < n; col++) {
    const int64_t p = col / kPanel;
    const int64_t j = col % kPanel;
    for (int64_t b = 0; b < blocks; b++) {
      uint8_t* dst = data + (p * groups + b / kGroupBlocks) * kPanelGroupBytes;
      std::memcpy(dst + j * 64 + (b % kGroupBlocks) * 16, w + (col * blocks + b) * 16, 16);
      std::memcpy(dst + kPanel * 64 + j * 16 + (b % kGroupBlocks) * 4, sw + col * blocks + b, 4);
    }
  }
  std::free(out->data);
  out->data = data;
  out->n = n;
  out->blocks = blocks;
  out->panels = panels;
  return true;
}

void GemmColumns(const QuantizedRows& a, const uint8_t* w, const float* sw, const PackedWeights* packed,
                 int64_t blocks, int64_t n0, int64_t n1, float* c, int64_t ldc) {
#ifdef GSQ4_X86
  if (packed != nullptr && packed->data != nullptr && UseVnni() && n0 % kPanel == 0) {
    return GemmPanelsVnni(a, *packed, n0 / kPanel, (n1 + kPanel - 1) / kPanel, c, ldc);
  }
#endif
  GemmColumnsScalar(a, w, sw, blocks, n0, n1, c, ldc);
}

const char* KernelName() { return UseVnni() ? "avx512vnni" : "scalar"; }

void ForceScalar(bool scalar) { g_force_scalar.store(scalar, std::memory_order_relaxed); }

}  // namespace gsq4
