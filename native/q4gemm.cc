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
// How far ahead in its panel the kernel asks for weights, into L2 (16 groups: 5 KB). Without it
// the loads stall on DRAM between bursts of arithmetic; with it, bench/q4-kernel.ts measured
// M = 4 and 8 about 1.2-1.6x faster (distances 4-96 and hints T0/T1/T2 tried).
constexpr int kPrefetchGroups = 16;

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

#ifdef GSQ4_X86
// One tile of R rows × one panel (kPanel = 4 columns) of C, over all groups. The panel's weights
// are one sequential stream (Pack); a column's group is one 64-byte load, low and high nibbles as
// two u8 vectors, and each row's dot with it is two dpbusd started from the zero-point
// correction: 16 int32 lanes, four per block. The four columns' dots are summed within each
// block and transposed into one vector, lane 4·block + column, so the float work (convert, scale
// by sa · sw, accumulate) is one vector per row and group instead of four.
template <int R>
__attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni"))) void Tile(
    const QuantizedRows& a, int64_t m0, const PackedWeights& w, int64_t panel, float* c, int64_t ldc) {
  const int64_t groups = a.groups;
  const __m512i nibble = _mm512_set1_epi8(0x0F);
  __m512 acc[R];
#pragma GCC unroll 8
  for (int r = 0; r < R; r++) acc[r] = _mm512_setzero_ps();
  const int8_t* q0 = a.q.data() + m0 * groups * kGroupQ;
  const int32_t* corr0 = a.corr.data() + m0 * groups * kLanes;
  const float* sa0 = a.scale.data() + m0 * groups * kLanes;
  const uint8_t* base = w.data + panel * groups * kPanelGroupBytes;
  for (int64_t g = 0; g < groups; g++, base += kPanelGroupBytes) {
#pragma GCC unroll 5
    for (int l = 0; l < kPanelGroupBytes / 64; l++) {
      _mm_prefetch(reinterpret_cast<const char*>(base + kPrefetchGroups * kPanelGroupBytes + l * 64), _MM_HINT_T1);
    }
    __m512i lo[kPanel], hi[kPanel];
#pragma GCC unroll 4
    for (int j = 0; j < kPanel; j++) {
      const __m512i raw = _mm512_load_si512(base + j * 64);
      lo[j] = _mm512_and_si512(raw, nibble);
      hi[j] = _mm512_and_si512(_mm512_srli_epi16(raw, 4), nibble);
    }
    const __m512 sb = _mm512_load_ps(reinterpret_cast<const float*>(base + kPanel * 64));
#pragma GCC unroll 8
    for (int r = 0; r < R; r++) {
      const int8_t* q = q0 + (r * groups + g) * kGroupQ;
      const __m512i even = _mm512_loadu_si512(q);
      const __m512i odd = _mm512_loadu_si512(q + 64);
      const __m512i corr = _mm512_loadu_si512(corr0 + (r * groups + g) * kLanes);
      __m512i d[kPanel];
#pragma GCC unroll 4
      for (int j = 0; j < kPanel; j++) d[j] = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(corr, lo[j], even), hi[j], odd);
      // within each block (128-bit lane): [Σ d0, Σ d1, Σ d2, Σ d3]
      const __m512i s01 = _mm512_add_epi32(_mm512_unpacklo_epi32(d[0], d[1]), _mm512_unpackhi_epi32(d[0], d[1]));
      const __m512i s23 = _mm512_add_epi32(_mm512_unpacklo_epi32(d[2], d[3]), _mm512_unpackhi_epi32(d[2], d[3]));
      const __m512i v = _mm512_add_epi32(_mm512_unpacklo_epi64(s01, s23), _mm512_unpackhi_epi64(s01, s23));
      const __m512 sa = _mm512_loadu_ps(sa0 + (r * groups + g) * kLanes);
      acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(v), _mm512_mul_ps(sa, sb), acc[r]);
    }
  }
  const int64_t n0 = panel * kPanel;
  const int cols = static_cast<int>(std::min<int64_t>(kPanel, w.n - n0));
#pragma GCC unroll 8
  for (int r = 0; r < R; r++) {
    // column j: the sum over the four blocks' lanes 4·b + j
    const __m128 sum = _mm_add_ps(_mm_add_ps(_mm512_extractf32x4_ps(acc[r], 0), _mm512_extractf32x4_ps(acc[r], 1)),
                                  _mm_add_ps(_mm512_extractf32x4_ps(acc[r], 2), _mm512_extractf32x4_ps(acc[r], 3)));
    alignas(16) float out[4];
    _mm_store_ps(out, sum);
    for (int j = 0; j < cols; j++) c[(m0 + r) * ldc + n0 + j] = out[j];
  }
}

void GemmPanelsVnni(const QuantizedRows& a, const PackedWeights& w, int64_t p0, int64_t p1, float* c, int64_t ldc) {
  // Panels in chunks whose weights stay in L2 while every row tile passes over them.
  const int64_t chunk = std::max<int64_t>(1, (128 * 1024) / (a.groups * kPanelGroupBytes));
  for (int64_t c0 = p0; c0 < p1; c0 += chunk) {
    const int64_t c1 = std::min(p1, c0 + chunk);
    int64_t m = 0;
    for (; m + 8 <= a.rows; m += 8) {
      for (int64_t p = c0; p < c1; p++) Tile<8>(a, m, w, p, c, ldc);
    }
    for (int64_t p = c0; p < c1; p++) {
      switch (a.rows - m) {
        case 7: Tile<7>(a, m, w, p, c, ldc); break;
        case 6: Tile<6>(a, m, w, p, c, ldc); break;
        case 5: Tile<5>(a, m, w, p, c, ldc); break;
        case 4: Tile<4>(a, m, w, p, c, ldc); break;
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
      std::memcpy(dst + kPanel * 64 + ((b % kGroupBlocks) * kPanel + j) * 4, sw + col * blocks + b, 4);
    }
  }
  std::free(out->data);
  out->data = data;
  out->n = n;
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
