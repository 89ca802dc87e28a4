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
#define GSQ4_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni")))
#endif

namespace gsq4 {

namespace {

constexpr int kBlock = 32;
constexpr int kSteps = 4;  // 64-byte nibble loads per panel block
constexpr int kNibbleBytes = kSteps * 64;

// A panel's group of blocks (q4gemm.h): kGroup blocks of nibbles, then their 16 columns' scales.
// Float32 scales: 1 block, 256 + 64 bytes. fp16 scales: 2 blocks, 512 + 2 × 32 bytes, so groups
// stay whole cache lines (64-byte aligned loads) while the scales take half the bytes.
struct F32Scales {
  static constexpr int kGroup = 1;
  static constexpr int kScaleBytes = kPanelColumns * 4;
#ifdef GSQ4_X86
  GSQ4_AVX512 static __m512 Load(const uint8_t* p) { return _mm512_load_ps(reinterpret_cast<const float*>(p)); }
#endif
};
struct F16Scales {
  static constexpr int kGroup = 2;
  static constexpr int kScaleBytes = kPanelColumns * 2;
#ifdef GSQ4_X86
  // vcvtph2ps: exact, one instruction for 16 columns
  GSQ4_AVX512 static __m512 Load(const uint8_t* p) { return _mm512_cvtph_ps(_mm256_load_si256(reinterpret_cast<const __m256i*>(p))); }
#endif
};
template <class S>
constexpr int kGroupBytes = S::kGroup * (kNibbleBytes + S::kScaleBytes);
static_assert(kGroupBytes<F32Scales> % 64 == 0 && kGroupBytes<F16Scales> % 64 == 0, "groups are whole cache lines");

std::atomic<int64_t> g_packed_bytes{0};

// How far ahead in its panel the kernel asks for weights, into L2 (16 blocks: 5 KB, 4.5 KB with
// fp16 scales). Without it the loads stall on DRAM between bursts of arithmetic: with the previous
// 4-column layout, whose stream also came in 320-byte steps, bench/q4-kernel.ts measured M = 4
// and 8 about 1.2-1.6x faster with it (distances 4-96 and hints T0/T1/T2 tried); not re-tuned for
// this layout nor for fp16 scales.
constexpr int kPrefetchBlocks = 16;

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

// Element i (< 32) of MatMulNBits' 16-byte block: byte i / 2, low nibble for even i.
inline int Nibble(const uint8_t* block, int i) { return (block[i >> 1] >> ((i & 1) * 4)) & 0x0F; }

// The scalar kernel: the definition, from the same quantized rows.
void GemmColumnsScalar(const QuantizedRows& a, const uint8_t* w, const float* sw, int64_t n0, int64_t n1, float* c,
                       int64_t ldc) {
  const int64_t blocks = a.blocks;
  for (int64_t m = 0; m < a.rows; m++) {
    const int8_t* q = a.q.data() + m * blocks * kBlock;
    const float* sa = a.scale.data() + m * blocks;
    for (int64_t n = n0; n < n1; n++) {
      float acc = 0.f;
      for (int64_t b = 0; b < blocks; b++) {
        const uint8_t* wb = w + (n * blocks + b) * 16;
        int32_t dot = 0;
        for (int i = 0; i < kBlock; i++) dot += q[b * kBlock + i] * (Nibble(wb, i) - 8);
        acc += static_cast<float>(dot) * (sa[b] * sw[n * blocks + b]);
      }
      c[m * ldc + n] = acc;
    }
  }
}

void QuantizeBlockScalar(const float* x, int64_t n, int8_t* q, int32_t* corr, float* scale) {
  float amax = 0.f;
  for (int64_t i = 0; i < n; i++) amax = std::max(amax, std::fabs(x[i]));
  const float inv = amax != 0.f ? 127.f / amax : 0.f;
  int32_t sum = 0;
  for (int64_t i = 0; i < kBlock; i++) {
    int8_t qi = 0;
    if (i < n) qi = static_cast<int8_t>(std::clamp(static_cast<int>(std::nearbyint(x[i] * inv)), -127, 127));
    q[i] = qi;
    sum += qi;
  }
  *corr = -8 * sum;
  *scale = amax / 127.f;
}

#ifdef GSQ4_X86
// The same arithmetic as QuantizeBlockScalar (cvtps rounds half to even, as nearbyint does in the
// default rounding mode), 32 elements at a time.
GSQ4_AVX512 void QuantizeBlockVnni(const float* x, int64_t n, int8_t* q, int32_t* corr, float* scale) {
  const __mmask16 m0 = n >= 16 ? 0xFFFF : static_cast<__mmask16>((1u << n) - 1);
  const __mmask16 m1 = n >= 32 ? 0xFFFF : n <= 16 ? 0 : static_cast<__mmask16>((1u << (n - 16)) - 1);
  const __m512 x0 = _mm512_maskz_loadu_ps(m0, x);
  const __m512 x1 = _mm512_maskz_loadu_ps(m1, x + 16);
  const float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(x0), _mm512_abs_ps(x1)));
  const __m512 inv = _mm512_set1_ps(amax != 0.f ? 127.f / amax : 0.f);
  const __m512i lim = _mm512_set1_epi32(127);
  const __m512i q0 = _mm512_max_epi32(_mm512_min_epi32(_mm512_cvtps_epi32(_mm512_mul_ps(x0, inv)), lim), _mm512_sub_epi32(_mm512_setzero_si512(), lim));
  const __m512i q1 = _mm512_max_epi32(_mm512_min_epi32(_mm512_cvtps_epi32(_mm512_mul_ps(x1, inv)), lim), _mm512_sub_epi32(_mm512_setzero_si512(), lim));
  _mm_storeu_si128(reinterpret_cast<__m128i*>(q), _mm512_cvtepi32_epi8(q0));
  _mm_storeu_si128(reinterpret_cast<__m128i*>(q + 16), _mm512_cvtepi32_epi8(q1));
  *corr = -8 * _mm512_reduce_add_epi32(_mm512_add_epi32(q0, q1));
  *scale = amax / 127.f;
}

// One tile of R rows × C panels (16 columns each, one per lane) of C, over all blocks. Per block
// and row, each panel's int32 lanes start from the row's zero-point correction and take 8 dpbusd
// (4 bytes of the row broadcast against 4 nibbles of each column); then one convert and one FMA
// by sa · sw accumulate the block in float. A panel's weights are one sequential stream (Pack),
// in groups of S::kGroup blocks with their scales of S's type.
template <int R, int C, class S>
GSQ4_AVX512 void Tile(const QuantizedRows& a, int64_t m0, const PackedWeights& w, int64_t p0, float* c, int64_t ldc) {
  const int64_t blocks = a.blocks;
  const int64_t groups = (blocks + S::kGroup - 1) / S::kGroup;
  const int64_t panel_bytes = groups * kGroupBytes<S>;
  const __m512i nibble = _mm512_set1_epi8(0x0F);
  __m512 acc[R][C];
#pragma GCC unroll 8
  for (int r = 0; r < R; r++) {
#pragma GCC unroll 4
    for (int j = 0; j < C; j++) acc[r][j] = _mm512_setzero_ps();
  }
  const int8_t* q = a.q.data() + m0 * blocks * kBlock;
  const int32_t* corr = a.corr.data() + m0 * blocks;
  const float* sa = a.scale.data() + m0 * blocks;
  const uint8_t* group = w.data + p0 * panel_bytes;
  for (int64_t g = 0; g < groups; g++, group += kGroupBytes<S>) {
#pragma GCC unroll 4
    for (int j = 0; j < C; j++) {
#pragma GCC unroll 9
      for (int l = 0; l < kGroupBytes<S> / 64; l++) {
        _mm_prefetch(reinterpret_cast<const char*>(group + j * panel_bytes + kPrefetchBlocks * (kNibbleBytes + S::kScaleBytes) + l * 64),
                     _MM_HINT_T1);
      }
    }
#pragma GCC unroll 2
    for (int i = 0; i < S::kGroup; i++) {
      const int64_t b = g * S::kGroup + i;
      if (b == blocks) break;  // the padding of an odd last group
      const uint8_t* base = group + i * kNibbleBytes;
      const uint8_t* scales = group + S::kGroup * kNibbleBytes + i * S::kScaleBytes;
      __m512i d[R][C];
#pragma GCC unroll 8
      for (int r = 0; r < R; r++) {
        const __m512i z = _mm512_set1_epi32(corr[r * blocks + b]);
#pragma GCC unroll 4
        for (int j = 0; j < C; j++) d[r][j] = z;
      }
#pragma GCC unroll 4
      for (int s = 0; s < kSteps; s++) {
        __m512i lo[C], hi[C];
#pragma GCC unroll 4
        for (int j = 0; j < C; j++) {
          const __m512i raw = _mm512_load_si512(base + j * panel_bytes + s * 64);
          lo[j] = _mm512_and_si512(raw, nibble);
          hi[j] = _mm512_and_si512(_mm512_srli_epi16(raw, 4), nibble);
        }
#pragma GCC unroll 8
        for (int r = 0; r < R; r++) {
          const int8_t* qs = q + (r * blocks + b) * kBlock + s * 8;
          int32_t x0, x1;
          std::memcpy(&x0, qs, 4);
          std::memcpy(&x1, qs + 4, 4);
          const __m512i v0 = _mm512_set1_epi32(x0);
          const __m512i v1 = _mm512_set1_epi32(x1);
#pragma GCC unroll 4
          for (int j = 0; j < C; j++) d[r][j] = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(d[r][j], lo[j], v0), hi[j], v1);
        }
      }
      __m512 sw[C];
#pragma GCC unroll 4
      for (int j = 0; j < C; j++) sw[j] = S::Load(scales + j * panel_bytes);
#pragma GCC unroll 8
      for (int r = 0; r < R; r++) {
        const __m512 s = _mm512_set1_ps(sa[r * blocks + b]);
#pragma GCC unroll 4
        for (int j = 0; j < C; j++) acc[r][j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(d[r][j]), _mm512_mul_ps(sw[j], s), acc[r][j]);
      }
    }
  }
#pragma GCC unroll 4
  for (int j = 0; j < C; j++) {
    const int64_t n0 = (p0 + j) * kPanelColumns;
    const int64_t cols = std::min<int64_t>(kPanelColumns, w.n - n0);
    const __mmask16 mask = cols >= 16 ? 0xFFFF : static_cast<__mmask16>((1u << cols) - 1);
#pragma GCC unroll 8
    for (int r = 0; r < R; r++) _mm512_mask_storeu_ps(c + (m0 + r) * ldc + n0, mask, acc[r][j]);
  }
}

// R rows over panels [p0, p1): C panels a tile where R is small (independent dot chains and
// fewer passes over the rows), then one at a time for the rest.
template <int R, int C, class S>
void TileRow(const QuantizedRows& a, int64_t m0, const PackedWeights& w, int64_t p0, int64_t p1, float* c, int64_t ldc) {
  int64_t p = p0;
  for (; p + C <= p1; p += C) Tile<R, C, S>(a, m0, w, p, c, ldc);
  for (; p < p1; p++) Tile<R, 1, S>(a, m0, w, p, c, ldc);
}

// From this many rows GemmPanelsVnni tiles 6 rows × 2 panels, below it 8 rows × 1 panel.
constexpr int64_t kWideRows = 32;

template <class S>
void GemmPanelsVnni(const QuantizedRows& a, const PackedWeights& w, int64_t p0, int64_t p1, float* c, int64_t ldc) {
  // Panels in chunks whose weights stay in L2 while every row tile passes over them.
  const int64_t panel_bytes = (a.blocks + S::kGroup - 1) / S::kGroup * kGroupBytes<S>;
  const int64_t chunk = a.rows <= 8 ? p1 - p0 : std::max<int64_t>(4, (256 * 1024) / panel_bytes / 4 * 4);
  for (int64_t c0 = p0; c0 < p1; c0 += chunk) {
    const int64_t c1 = std::min(p1, c0 + chunk);
    int64_t m = 0;
    if (a.rows >= kWideRows) {
      // prefill: 6 rows × 2 panels (12 int32 + 12 float accumulators, 4 unpacked weight
      // registers, 2 broadcasts: 30 of the 32 zmm), so each broadcast feeds 2 vpdpbusd and each
      // panel's scales are loaded (converted) once per block for 6 rows; an odd last panel of
      // the chunk takes Tile<6, 1>
      for (; m + 6 <= a.rows; m += 6) TileRow<6, 2, S>(a, m, w, c0, c1, c, ldc);
    } else {
      for (; m + 8 <= a.rows; m += 8) TileRow<8, 1, S>(a, m, w, c0, c1, c, ldc);
    }
    switch (a.rows - m) {
      case 7: TileRow<7, 1, S>(a, m, w, c0, c1, c, ldc); break;
      case 6: TileRow<6, 1, S>(a, m, w, c0, c1, c, ldc); break;
      case 5: TileRow<5, 1, S>(a, m, w, c0, c1, c, ldc); break;
      case 4: TileRow<4, 2, S>(a, m, w, c0, c1, c, ldc); break;
      case 3: TileRow<3, 2, S>(a, m, w, c0, c1, c, ldc); break;
      case 2: TileRow<2, 4, S>(a, m, w, c0, c1, c, ldc); break;
      case 1: TileRow<1, 4, S>(a, m, w, c0, c1, c, ldc); break;
      default: break;
    }
  }
}
#endif

// The IEEE half bits of a float that IsHalfExact accepts.
uint16_t HalfBits(float s) {
  uint32_t x = 0;
  std::memcpy(&x, &s, 4);
  const uint16_t sign = static_cast<uint16_t>((x >> 16) & 0x8000);
  const float a = std::fabs(s);
  if (a >= 0x1p-14f) return static_cast<uint16_t>(sign | (((x >> 23) & 0xFF) - 127 + 15) << 10 | ((x >> 13) & 0x3FF));
  return static_cast<uint16_t>(sign | static_cast<uint16_t>(a * 0x1p24f));  // subnormal (or zero): a multiple of 2^-24
}

// Packs into groups of S (q4gemm.h): column `col`'s lane of each group's nibbles and scales.
template <class S>
void PackPanels(const uint8_t* w, const float* sw, int64_t n, int64_t blocks, uint8_t* data) {
  const int64_t groups = (blocks + S::kGroup - 1) / S::kGroup;
  for (int64_t col = 0; col < n; col++) {
    const int64_t lane = col % kPanelColumns;
    for (int64_t b = 0; b < blocks; b++) {
      uint8_t* group = data + ((col / kPanelColumns) * groups + b / S::kGroup) * kGroupBytes<S>;
      uint8_t* dst = group + (b % S::kGroup) * kNibbleBytes;
      const uint8_t* src = w + (col * blocks + b) * 16;
      for (int s = 0; s < kSteps; s++) {
        for (int j = 0; j < 4; j++) {
          dst[s * 64 + lane * 4 + j] = static_cast<uint8_t>(Nibble(src, 8 * s + j) | Nibble(src, 8 * s + 4 + j) << 4);
        }
      }
      uint8_t* scale = group + S::kGroup * kNibbleBytes + (b % S::kGroup) * S::kScaleBytes;
      const float s = sw[col * blocks + b];
      if constexpr (S::kScaleBytes == kPanelColumns * 2) {
        const uint16_t h = HalfBits(s);
        std::memcpy(scale + lane * 2, &h, 2);
      } else {
        std::memcpy(scale + lane * 4, &s, 4);
      }
    }
  }
}

}  // namespace

void Resize(QuantizedRows* out, int64_t rows, int64_t blocks) {
  out->rows = rows;
  out->blocks = blocks;
  const size_t n = static_cast<size_t>(rows * blocks);
  if (out->q.size() < n * kBlock) out->q.resize(n * kBlock);
  if (out->corr.size() < n) out->corr.resize(n);
  if (out->scale.size() < n) out->scale.resize(n);
}

void QuantizeRows(const float* a, int64_t k, int64_t r0, int64_t r1, QuantizedRows* out) {
  const int64_t blocks = out->blocks;
#ifdef GSQ4_X86
  const bool vnni = UseVnni();
#endif
  for (int64_t m = r0; m < r1; m++) {
    for (int64_t b = 0; b < blocks; b++) {
      const float* x = a + m * k + b * kBlock;
      const int64_t n = std::min<int64_t>(kBlock, k - b * kBlock);
      int8_t* q = out->q.data() + (m * blocks + b) * kBlock;
      int32_t* corr = out->corr.data() + m * blocks + b;
      float* scale = out->scale.data() + m * blocks + b;
#ifdef GSQ4_X86
      if (vnni) {
        QuantizeBlockVnni(x, n, q, corr, scale);
        continue;
      }
#endif
      QuantizeBlockScalar(x, n, q, corr, scale);
    }
  }
}

PackedWeights::~PackedWeights() {
  g_packed_bytes.fetch_sub(static_cast<int64_t>(bytes), std::memory_order_relaxed);
  std::free(data);
}

bool IsHalfExact(float s) {
  if (s == 0.f) return true;
  const float a = std::fabs(s);
  if (!(a <= 65504.f)) return false;  // beyond the largest half, Inf, NaN
  int e = 0;
  std::frexp(a, &e);  // a in [2^(e-1), 2^e)
  // 11 significant bits where half is normal (a >= 2^-14), else a multiple of 2^-24
  const float scaled = a >= 0x1p-14f ? std::ldexp(a, 11 - e) : std::ldexp(a, 24);
  return scaled == std::floor(scaled);
}

bool Pack(const uint8_t* w, const float* sw, int64_t n, int64_t blocks, PackedWeights* out) {
  if (!HasVnni()) return false;
  // fp16 panels only where that loses nothing: an export whose scales were rounded to fp16
  bool half = true;
  for (int64_t i = 0; i < n * blocks && half; i++) half = IsHalfExact(sw[i]);
  const int64_t panels = (n + kPanelColumns - 1) / kPanelColumns;
  const int64_t groups = half ? (blocks + F16Scales::kGroup - 1) / F16Scales::kGroup : blocks;
  const size_t bytes = static_cast<size_t>(panels * groups * (half ? kGroupBytes<F16Scales> : kGroupBytes<F32Scales>));
  auto* data = static_cast<uint8_t*>(std::aligned_alloc(64, bytes));
  if (data == nullptr) return false;
  std::memset(data, 0, bytes);
  if (half) {
    PackPanels<F16Scales>(w, sw, n, blocks, data);
  } else {
    PackPanels<F32Scales>(w, sw, n, blocks, data);
  }
  g_packed_bytes.fetch_add(static_cast<int64_t>(bytes) - static_cast<int64_t>(out->bytes), std::memory_order_relaxed);
  std::free(out->data);
  out->data = data;
  out->n = n;
  out->half_scales = half;
  out->bytes = bytes;
  return true;
}

int64_t PackedBytes() { return g_packed_bytes.load(std::memory_order_relaxed); }

void GemmColumns(const QuantizedRows& a, const uint8_t* w, const float* sw, const PackedWeights* packed,
                 int64_t n0, int64_t n1, float* c, int64_t ldc) {
#ifdef GSQ4_X86
  if (packed != nullptr && packed->data != nullptr && UseVnni() && n0 % kPanelColumns == 0) {
    const int64_t p0 = n0 / kPanelColumns, p1 = (n1 + kPanelColumns - 1) / kPanelColumns;
    if (packed->half_scales) return GemmPanelsVnni<F16Scales>(a, *packed, p0, p1, c, ldc);
    return GemmPanelsVnni<F32Scales>(a, *packed, p0, p1, c, ldc);
  }
#endif
  GemmColumnsScalar(a, w, sw, n0, n1, c, ldc);
}

const char* KernelName() { return UseVnni() ? "avx512vnni" : "scalar"; }

void ForceScalar(bool scalar) { g_force_scalar.store(scalar, std::memory_order_relaxed); }

}  // namespace gsq4
