// The custom operator `ai.gemma_serve.PagedAttention` (CPU): one layer's attention of the paged
// layout (src/engine/export/paged-attention.ts) in one node, in place of its ~40 ONNX nodes
// (rotary, mask, block gather, layout, scores, soft-cap, softmax, p·v). Keys and values are read
// where they lie in the layer's block pool; nothing is gathered or transposed.
//
// Inputs (B rows, S new tokens a row, nq / nkv heads, D head dim, NB pool blocks of bs slots,
// M blocks in a row's view, C = M * bs slots):
//   0 q [B, S, nq, D]     1 k [B, S, nkv, D]     2 v [B, S, nkv, D]   (q and k before rotary)
//   3 cos [B, S, 1, D]    4 sin [B, S, 1, D]     5 positions float [B, S] (-1: padding)
//   6 key pool, 7 value pool: float or float16 (both the same) [nkv, NB, bs, D]
//   8 block table int64 [B, M]                   9 slot positions int64 [B, C] (-1: empty)
// Attributes: num_heads, num_kv_heads, scale (float: query_pre_attn_scalar^-0.5), softcap
// (float, 0: none), window (int, 0: none).
// Outputs: 0 context [B * S, nq * D]; 1 the new keys after rotary [B, S, nkv, D].
//
// What it computes is the graph's: a key at position j is visible from a query at i iff j >= 0,
// j <= i and, with a window W, i - j < W; scores q·k * scale, soft-capped (cap * tanh(s / cap));
// softmax over the visible keys (cached slots, then the new tokens); float16 pool entries are
// widened exactly to float as they are read (the new tokens' keys stay float, as in the graph,
// which casts the gathered cache to float); head h reads kv head
// h / (nq / nkv). A query with no visible key (a padding row) gets zeros (the graph's masked
// softmax gave a finite average there; those rows are discarded either way).
#include "attnop.h"

#include <algorithm>
#include <atomic>
#include <climits>
#include <cmath>
#include <cstring>
#include <string>
#include <type_traits>
#include <vector>

#include "cpu_op.h"

#if defined(__x86_64__)
#include <immintrin.h>
#define GSA_X86 1
#define GSA_AVX512 __attribute__((target("avx512f,avx512dq")))
#endif

namespace {

const OrtApi* g_api = nullptr;
std::atomic<bool> g_force_scalar{false};

// IEEE half bits to float, exactly (subnormals, infinities and NaNs included).
inline float HalfToFloat(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16, exp = (h >> 10) & 0x1fu, mant = h & 0x3ffu;
  uint32_t bits = sign;
  if (exp == 31) {
    bits |= 0x7f800000u | (mant << 13);
  } else if (exp != 0) {
    bits |= ((exp + 112) << 23) | (mant << 13);
  } else if (mant != 0) {  // subnormal: mant * 2^-24, normalized
    uint32_t m = mant, e = 0;
    while ((m & 0x400u) == 0) {
      m <<= 1;
      e++;
    }
    bits |= ((113 - e) << 23) | ((m & 0x3ffu) << 13);
  }
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

inline float ToFloat(float x) { return x; }
inline float ToFloat(uint16_t x) { return HalfToFloat(x); }

#define RETURN_IF(expr)                          \
  do {                                           \
    if (OrtStatusPtr st__ = (expr)) return st__; \
  } while (0)

OrtStatusPtr Error(const std::string& msg) { return g_api->CreateStatus(ORT_INVALID_ARGUMENT, msg.c_str()); }

bool HasAvx512() {
#ifdef GSA_X86
  static const bool has = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq");
  return has;
#else
  return false;
#endif
}

struct Kernel {
  int64_t nq = 0, nkv = 0;
  float scale = 1.f, softcap = 0.f;
  int64_t window = 0;
};

// ---- vector pieces: an AVX-512 version where the CPU has it and D is a multiple of 16, else plain C++.

template <typename T>
float DotScalar(const float* a, const T* b, int64_t n) {
  float s = 0.f;
  for (int64_t i = 0; i < n; i++) s += a[i] * ToFloat(b[i]);
  return s;
}
template <typename T>
void AxpyScalar(float a, const T* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; i++) y[i] += a * ToFloat(x[i]);
}

#ifdef GSA_X86
// 16 floats from p: float as they are, float16 widened (vcvtph2ps, exact).
GSA_AVX512 inline __m512 Load16(const float* p) { return _mm512_loadu_ps(p); }
GSA_AVX512 inline __m512 Load16(const uint16_t* p) { return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))); }

template <typename T>
GSA_AVX512 float Dot16(const float* a, const T* b, int64_t n) {
  __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), Load16(b + i), s0);
    s1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 16), Load16(b + i + 16), s1);
  }
  if (i < n) s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), Load16(b + i), s0);
  return _mm512_reduce_add_ps(_mm512_add_ps(s0, s1));
}
template <typename T>
GSA_AVX512 void Axpy16(float a, const T* x, float* y, int64_t n) {
  const __m512 va = _mm512_set1_ps(a);
  for (int64_t i = 0; i < n; i += 16) _mm512_storeu_ps(y + i, _mm512_fmadd_ps(va, Load16(x + i), _mm512_loadu_ps(y + i)));
}
// e^x for x <= 0 (softmax after the max is taken out): 2^n * p(r), |r| <= ln2 / 2, degree-6
// Taylor polynomial (relative error below 2e-7); below -87 it is 0.
GSA_AVX512 __m512 ExpNonPositive(__m512 x) {
  x = _mm512_max_ps(x, _mm512_set1_ps(-87.f));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693145751953125f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.428606765330187045e-06f), r);
  __m512 p = _mm512_set1_ps(1.f / 720);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f / 120));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f / 24));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f / 6));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f));
  return _mm512_scalef_ps(p, n);
}
// s[i] = cap * tanh(s[i] / cap), tanh |y| = (1 - e) / (1 + e) with e = e^(-2|y|).
GSA_AVX512 void SoftcapAvx512(float* s, int64_t n, float cap) {
  const __m512 inv = _mm512_set1_ps(-2.f / cap), vcap = _mm512_set1_ps(cap), one = _mm512_set1_ps(1.f);
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = n - i >= 16 ? 0xffff : static_cast<__mmask16>((1u << (n - i)) - 1);
    const __m512 x = _mm512_maskz_loadu_ps(m, s + i);
    const __m512 e = ExpNonPositive(_mm512_mul_ps(_mm512_abs_ps(x), inv));
    const __m512 t = _mm512_div_ps(_mm512_sub_ps(one, e), _mm512_add_ps(one, e));
    // sign of x back on, times cap
    const __m512 signed_t = _mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(t), _mm512_and_si512(_mm512_castps_si512(x), _mm512_set1_epi32(INT_MIN))));
    _mm512_mask_storeu_ps(s + i, m, _mm512_mul_ps(signed_t, vcap));
  }
}
// s[i] = e^(s[i] - max); returns their sum.
GSA_AVX512 float ExpSumAvx512(float* s, int64_t n, float max) {
  const __m512 vmax = _mm512_set1_ps(max);
  __m512 sum = _mm512_setzero_ps();
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = n - i >= 16 ? 0xffff : static_cast<__mmask16>((1u << (n - i)) - 1);
    const __m512 e = ExpNonPositive(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, s + i), vmax));
    _mm512_mask_storeu_ps(s + i, m, e);
    sum = _mm512_add_ps(sum, _mm512_maskz_mov_ps(m, e));
  }
  return _mm512_reduce_add_ps(sum);
}
#endif

struct Vec {
  bool avx512;
  int64_t d;
  template <typename T>
  float Dot(const float* a, const T* b) const {
#ifdef GSA_X86
    if (avx512) return Dot16(a, b, d);
#endif
    return DotScalar(a, b, d);
  }
  template <typename T>
  void Axpy(float a, const T* x, float* y) const {
#ifdef GSA_X86
    if (avx512) return Axpy16(a, x, y, d);
#endif
    AxpyScalar(a, x, y, d);
  }
  void Softcap(float* s, int64_t n, float cap) const {
#ifdef GSA_X86
    if (avx512) return SoftcapAvx512(s, n, cap);
#endif
    for (int64_t i = 0; i < n; i++) s[i] = cap * std::tanh(s[i] / cap);
  }
  float ExpSum(float* s, int64_t n, float max) const {
#ifdef GSA_X86
    if (avx512) return ExpSumAvx512(s, n, max);
#endif
    float sum = 0.f;
    for (int64_t i = 0; i < n; i++) sum += (s[i] = std::exp(s[i] - max));
    return sum;
  }
};

// ---- the op

struct Work {
  const Kernel* kernel;
  Vec vec;
  const float *q, *v, *cos, *sin, *qpos;
  const void *kpool, *vpool;
  bool half;  // the pools hold float16
  const int64_t *table, *slots;
  float *ctx, *kr;
  int64_t B, S, D, M, C, NB, bs, grp, chunk, chunks;
  std::atomic<bool> bad_block{false};
};

// q·cos + rotate_half(q)·sin, rotate_half(x) = cat(-x2, x1), times `scale`.
void Rotate(const float* x, const float* cos, const float* sin, int64_t D, float scale, float* out) {
  const int64_t h = D / 2;
  for (int64_t d = 0; d < h; d++) out[d] = (x[d] * cos[d] - x[d + h] * sin[d]) * scale;
  for (int64_t d = h; d < D; d++) out[d] = (x[d] * cos[d] + x[d - h] * sin[d]) * scale;
}

inline bool Visible(int64_t i, int64_t j, int64_t window) { return j >= 0 && j <= i && (window == 0 || i - j < window); }

// Calls fn(key, value, position) for each key of row b's kv head whose position `accept` takes:
// the cached slots (through the block table; `const T*` into the pools, T the pools' element
// type), then the step's new tokens (`const float*`; padding skipped).
template <typename T, typename Accept, typename Fn>
void ForEachKeyOf(Work* w, int64_t b, int64_t kv, Accept accept, Fn fn) {
  const int64_t D = w->D, S = w->S, nkv = w->kernel->nkv;
  const T* kpool = static_cast<const T*>(w->kpool);
  const T* vpool = static_cast<const T*>(w->vpool);
  const int64_t* slots = w->slots + b * w->C;
  const int64_t* table = w->table + b * w->M;
  for (int64_t c = 0; c < w->C; c++) {
    if (!accept(slots[c])) continue;
    const int64_t block = table[c / w->bs];
    if (block < 0 || block >= w->NB) {
      w->bad_block.store(true, std::memory_order_relaxed);
      continue;
    }
    const int64_t at = ((kv * w->NB + block) * w->bs + c % w->bs) * D;
    fn(kpool + at, vpool + at, slots[c]);
  }
  const float* qpos = w->qpos + b * S;
  for (int64_t t = 0; t < S; t++) {
    if (qpos[t] < 0 || !accept(static_cast<int64_t>(qpos[t]))) continue;
    const int64_t at = ((b * S + t) * nkv + kv) * D;
    fn(static_cast<const float*>(w->kr + at), w->v + at, static_cast<int64_t>(qpos[t]));
  }
}

template <typename Accept, typename Fn>
void ForEachKey(Work* w, int64_t b, int64_t kv, Accept accept, Fn fn) {
  if (w->half) {
    ForEachKeyOf<uint16_t>(w, b, kv, accept, fn);
  } else {
    ForEachKeyOf<float>(w, b, kv, accept, fn);
  }
}

// Whether a key pointer ForEachKey passed is into float16 pools.
template <typename P>
constexpr bool IsHalf() { return std::is_same_v<std::remove_cv_t<std::remove_pointer_t<P>>, uint16_t>; }

#ifdef GSA_X86
// scores[r][l] = q_r · key_l for rows [0, R) and the 16 keys (zero past n) transposed in kt [D][16].
// (GCC keeps the fixed-size accumulator arrays in registers only when their loops are unrolled.)
GSA_AVX512 void ScoreTile(const float* q, int64_t R, int64_t D, const float* kt, float* scores, int64_t ld) {
  int64_t r = 0;
  for (; r + 8 <= R; r += 8) {
    __m512 acc[8];
#pragma GCC unroll 8
    for (int i = 0; i < 8; i++) acc[i] = _mm512_setzero_ps();
    for (int64_t d = 0; d < D; d++) {
      const __m512 k = _mm512_load_ps(kt + d * 16);
#pragma GCC unroll 8
      for (int i = 0; i < 8; i++) acc[i] = _mm512_fmadd_ps(_mm512_set1_ps(q[(r + i) * D + d]), k, acc[i]);
    }
#pragma GCC unroll 8
    for (int i = 0; i < 8; i++) _mm512_storeu_ps(scores + (r + i) * ld, acc[i]);
  }
  for (; r < R; r++) {
    __m512 acc = _mm512_setzero_ps();
    for (int64_t d = 0; d < D; d++) acc = _mm512_fmadd_ps(_mm512_set1_ps(q[r * D + d]), _mm512_load_ps(kt + d * 16), acc);
    _mm512_storeu_ps(scores + r * ld, acc);
  }
}

// acc[i] += sum over keys c in [c0, c1) of p[i][c] * values[c][d0, d0 + 16 NZ), values of type T.
template <int ROWS, int NZ, typename T>
GSA_AVX512 inline __attribute__((always_inline)) void ValueSpan(__m512 (&acc)[ROWS][NZ], const float* p, int64_t ld, const void* const* values, int64_t c0, int64_t c1, int64_t d0) {
  for (int64_t c = c0; c < c1; c++) {
    const T* row = static_cast<const T*>(values[c]) + d0;
    __m512 v[NZ];
#pragma GCC unroll 4
    for (int z = 0; z < NZ; z++) v[z] = Load16(row + 16 * z);
#pragma GCC unroll 4
    for (int i = 0; i < ROWS; i++) {
      const __m512 pc = _mm512_set1_ps(p[i * ld + c]);
#pragma GCC unroll 4
      for (int z = 0; z < NZ; z++) acc[i][z] = _mm512_fmadd_ps(pc, v[z], acc[i][z]);
    }
  }
}

// out_i[d0, d0 + 16 NZ) = sum over keys c of p[i][c] * values[c][d0 ...] for ROWS rows; values
// [0, nhalf) are float16 (pool entries), the rest float.
template <int ROWS, int NZ>
GSA_AVX512 void ValueTile(const float* p, int64_t ld, const void* const* values, int64_t nhalf, int64_t n, int64_t d0, float* const* out) {
  __m512 acc[ROWS][NZ];
#pragma GCC unroll 4
  for (int i = 0; i < ROWS; i++) {
#pragma GCC unroll 4
    for (int z = 0; z < NZ; z++) acc[i][z] = _mm512_setzero_ps();
  }
  ValueSpan<ROWS, NZ, uint16_t>(acc, p, ld, values, 0, nhalf, d0);
  ValueSpan<ROWS, NZ, float>(acc, p, ld, values, nhalf, n, d0);
#pragma GCC unroll 4
  for (int i = 0; i < ROWS; i++) {
#pragma GCC unroll 4
    for (int z = 0; z < NZ; z++) _mm512_storeu_ps(out[i] + d0 + 16 * z, acc[i][z]);
  }
}

// ValueTile over the whole head dim (a multiple of 16) for ROWS rows.
template <int ROWS>
GSA_AVX512 void ValueRows(const float* p, int64_t ld, const void* const* values, int64_t nhalf, int64_t n, int64_t D, float* const* out) {
  int64_t d0 = 0;
  for (; d0 + 64 <= D; d0 += 64) ValueTile<ROWS, 4>(p, ld, values, nhalf, n, d0, out);
  if (D - d0 == 48) ValueTile<ROWS, 3>(p, ld, values, nhalf, n, d0, out);
  if (D - d0 == 32) ValueTile<ROWS, 2>(p, ld, values, nhalf, n, d0, out);
  if (D - d0 == 16) ValueTile<ROWS, 1>(p, ld, values, nhalf, n, d0, out);
}

// The chunk's rows all at once (a prefill): keys scored in tiles of 16 against 8 rows at a time,
// then p·v in 4-row tiles, as a GEMM would; each row's mask applied to its scores in between.
GSA_AVX512 void AttendTiled(Work* w, int64_t b, int64_t kv, int64_t s0, int64_t s1) {
  const Kernel& k = *w->kernel;
  const int64_t D = w->D, S = w->S, nq = k.nq, grp = w->grp;
  const int64_t R = (s1 - s0) * grp;
  const float* qpos = w->qpos + b * S;
  // Keys any row of the chunk can see: from the chunk's first position's window to its last position.
  int64_t lo = INT64_MAX, hi = -1;
  for (int64_t s = s0; s < s1; s++) {
    if (qpos[s] < 0) continue;
    lo = std::min(lo, static_cast<int64_t>(qpos[s]));
    hi = std::max(hi, static_cast<int64_t>(qpos[s]));
  }
  thread_local std::vector<const void*> keys, values;
  thread_local std::vector<int64_t> kpos;
  thread_local std::vector<float> q, kt, scores, wide;
  keys.clear();
  values.clear();
  kpos.clear();
  int64_t nhalf = 0;  // keys [0, nhalf) are float16 pool entries (they come first)
  const auto candidate = [&](int64_t j) { return j >= 0 && j <= hi && (k.window == 0 || lo - j < k.window); };
  ForEachKey(w, b, kv, candidate, [&](const auto* key, const auto* value, int64_t j) {
    if constexpr (IsHalf<decltype(key)>()) nhalf++;
    keys.push_back(key);
    values.push_back(value);
    kpos.push_back(j);
  });
  const int64_t n = static_cast<int64_t>(keys.size());
  wide.resize(static_cast<size_t>(D));
  const int64_t ld = (n + 15) / 16 * 16;
  q.resize(static_cast<size_t>(R * D));
  kt.resize(static_cast<size_t>(D * 16) + 16);
  scores.resize(static_cast<size_t>(R * std::max<int64_t>(ld, 16)));
  float* kt16 = kt.data() + (16 - reinterpret_cast<uintptr_t>(kt.data()) / sizeof(float) % 16) % 16;  // 64-byte aligned
  float* outs[4];
  // Rows r = (s - s0) * grp + j: rotated, scaled queries.
  for (int64_t s = s0; s < s1; s++) {
    for (int64_t j = 0; j < grp; j++) {
      const int64_t r = (s - s0) * grp + j;
      const int64_t h = kv * grp + j;
      Rotate(w->q + ((b * S + s) * nq + h) * D, w->cos + (b * S + s) * D, w->sin + (b * S + s) * D, D, k.scale, q.data() + r * D);
    }
  }
  for (int64_t t0 = 0; t0 < n; t0 += 16) {
    const int64_t m = std::min<int64_t>(16, n - t0);
    for (int64_t l = 0; l < 16; l++) {
      const float* key = nullptr;
      if (l < m && t0 + l < nhalf) {
        const auto* h = static_cast<const uint16_t*>(keys[static_cast<size_t>(t0 + l)]);
        for (int64_t d = 0; d < D; d += 16) _mm512_storeu_ps(wide.data() + d, Load16(h + d));
        key = wide.data();
      } else if (l < m) {
        key = static_cast<const float*>(keys[static_cast<size_t>(t0 + l)]);
      }
      for (int64_t d = 0; d < D; d++) kt16[d * 16 + l] = key != nullptr ? key[d] : 0.f;
    }
    ScoreTile(q.data(), R, D, kt16, scores.data() + t0, ld);
  }
  for (int64_t r = 0; r < R; r++) {
    const int64_t s = s0 + r / grp;
    float* row = scores.data() + r * ld;
    if (qpos[s] < 0 || n == 0) {
      std::fill(row, row + ld, 0.f);
      continue;
    }
    const int64_t i = static_cast<int64_t>(qpos[s]);
    if (k.softcap > 0.f) SoftcapAvx512(row, n, k.softcap);
    float max = -3.4e38f;
    int64_t visible = 0;
    for (int64_t c = 0; c < n; c++) {
      if (Visible(i, kpos[static_cast<size_t>(c)], k.window)) {
        max = std::max(max, row[c]);
        visible++;
      } else {
        row[c] = -3.4e38f;
      }
    }
    if (visible == 0) {
      std::fill(row, row + ld, 0.f);
      continue;
    }
    const float inv = 1.f / ExpSumAvx512(row, n, max);
    for (int64_t c = 0; c < n; c++) row[c] = Visible(i, kpos[static_cast<size_t>(c)], k.window) ? row[c] * inv : 0.f;
  }
  for (int64_t r = 0; r < R; r += 4) {
    const int64_t rows = std::min<int64_t>(4, R - r);
    for (int64_t i = 0; i < rows; i++) {
      const int64_t s = s0 + (r + i) / grp;
      outs[i] = w->ctx + ((b * S + s) * nq + kv * grp + (r + i) % grp) * D;
    }
    const float* p = scores.data() + r * ld;
    switch (rows) {
      case 4: ValueRows<4>(p, ld, values.data(), nhalf, n, D, outs); break;
      case 3: ValueRows<3>(p, ld, values.data(), nhalf, n, D, outs); break;
      case 2: ValueRows<2>(p, ld, values.data(), nhalf, n, D, outs); break;
      default: ValueRows<1>(p, ld, values.data(), nhalf, n, D, outs); break;
    }
  }
}
#endif

// Item (b, kv head, chunk of queries): every query head of that kv head over the chunk's tokens.
void AttendItem(void* p, size_t item) {
  auto* w = static_cast<Work*>(p);
  const Kernel& k = *w->kernel;
  const int64_t D = w->D, S = w->S, nkv = k.nkv, nq = k.nq;
  const int64_t chunk_i = static_cast<int64_t>(item) % w->chunks;
  const int64_t kv = static_cast<int64_t>(item) / w->chunks % nkv;
  const int64_t b = static_cast<int64_t>(item) / w->chunks / nkv;
  const int64_t s0 = chunk_i * w->chunk, s1 = std::min(S, s0 + w->chunk);
#ifdef GSA_X86
  if (w->vec.avx512 && (s1 - s0) * w->grp >= 8) return AttendTiled(w, b, kv, s0, s1);
#endif
  thread_local std::vector<float> scores, qrow;
  thread_local std::vector<const void*> values;
  const size_t width = static_cast<size_t>(w->C + S);
  if (scores.size() < width) {
    scores.resize(width);
    values.resize(width);
  }
  if (qrow.size() < static_cast<size_t>(D)) qrow.resize(static_cast<size_t>(D));
  const float* qpos = w->qpos + b * S;
  for (int64_t s = s0; s < s1; s++) {
    const int64_t i = static_cast<int64_t>(qpos[s]);
    const float* cos = w->cos + (b * S + s) * D;
    const float* sin = w->sin + (b * S + s) * D;
    for (int64_t j = 0; j < w->grp; j++) {
      const int64_t h = kv * w->grp + j;
      float* out = w->ctx + ((b * S + s) * nq + h) * D;
      std::memset(out, 0, sizeof(float) * static_cast<size_t>(D));
      if (qpos[s] < 0) continue;
      Rotate(w->q + ((b * S + s) * nq + h) * D, cos, sin, D, k.scale, qrow.data());
      int64_t n = 0, nhalf = 0;  // values [0, nhalf) are float16 pool entries (they come first)
      ForEachKey(w, b, kv, [&](int64_t j) { return Visible(i, j, k.window); }, [&](const auto* key, const auto* value, int64_t) {
        if constexpr (IsHalf<decltype(key)>()) nhalf++;
        scores[n] = w->vec.Dot(qrow.data(), key);
        values[n++] = value;
      });
      if (n == 0) continue;
      if (k.softcap > 0.f) w->vec.Softcap(scores.data(), n, k.softcap);
      const float max = *std::max_element(scores.data(), scores.data() + n);
      const float inv = 1.f / w->vec.ExpSum(scores.data(), n, max);
      for (int64_t c = 0; c < nhalf; c++) w->vec.Axpy(scores[c] * inv, static_cast<const uint16_t*>(values[c]), out);
      for (int64_t c = nhalf; c < n; c++) w->vec.Axpy(scores[c] * inv, static_cast<const float*>(values[c]), out);
    }
  }
}

// A tensor's shape and element type.
OrtStatusPtr Describe(const OrtValue* v, std::vector<int64_t>* dims, ONNXTensorElementDataType* type) {
  OrtTensorTypeAndShapeInfo* info = nullptr;
  RETURN_IF(g_api->GetTensorTypeAndShape(v, &info));
  size_t rank = 0;
  OrtStatusPtr st = g_api->GetDimensionsCount(info, &rank);
  dims->assign(rank, 0);
  if (st == nullptr) st = g_api->GetDimensions(info, dims->data(), rank);
  if (st == nullptr) st = g_api->GetTensorElementType(info, type);
  g_api->ReleaseTensorTypeAndShapeInfo(info);
  return st;
}

OrtStatusPtr Compute(const Kernel& kernel, OrtKernelContext* ctx) {
  constexpr size_t kInputs = 10;
  const OrtValue* in[kInputs] = {};
  std::vector<int64_t> dims[kInputs];
  ONNXTensorElementDataType types[kInputs] = {};
  const void* data[kInputs] = {};
  for (size_t i = 0; i < kInputs; i++) {
    RETURN_IF(g_api->KernelContext_GetInput(ctx, i, &in[i]));
    RETURN_IF(Describe(in[i], &dims[i], &types[i]));
    RETURN_IF(g_api->GetTensorData(in[i], &data[i]));
  }
  const ONNXTensorElementDataType pool_type = types[6];
  if (pool_type != types[7] || (pool_type != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT && pool_type != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16)) {
    return Error("PagedAttention: the key and value pools must both be float or both float16");
  }
  const auto& qd = dims[0];
  const auto& pool = dims[6];
  if (qd.size() != 4 || qd[2] != kernel.nq || pool.size() != 4 || pool[0] != kernel.nkv || pool[3] != qd[3]) {
    return Error("PagedAttention: q must be [B, S, num_heads, D] and the pools [num_kv_heads, blocks, block_size, D]");
  }
  const int64_t B = qd[0], S = qd[1], D = qd[3];
  const std::vector<int64_t> kv_shape{B, S, kernel.nkv, D}, rope_shape{B, S, 1, D}, pos_shape{B, S};
  if (dims[1] != kv_shape || dims[2] != kv_shape || dims[3] != rope_shape || dims[4] != rope_shape || dims[5] != pos_shape ||
      dims[7] != pool || dims[8].size() != 2 || dims[8][0] != B || dims[9].size() != 2 || dims[9][0] != B ||
      dims[9][1] > dims[8][1] * pool[2]) {
    return Error("PagedAttention: the inputs' shapes do not agree (q, k, v, cos, sin, positions, pools, block table, slot positions)");
  }
  const int64_t ctx_dims[2] = {B * S, kernel.nq * D};
  OrtValue* ctx_v = nullptr;
  OrtValue* kr_v = nullptr;
  RETURN_IF(g_api->KernelContext_GetOutput(ctx, 0, ctx_dims, 2, &ctx_v));
  RETURN_IF(g_api->KernelContext_GetOutput(ctx, 1, kv_shape.data(), 4, &kr_v));
  void* ctx_data = nullptr;
  void* kr_data = nullptr;
  RETURN_IF(g_api->GetTensorMutableData(ctx_v, &ctx_data));
  RETURN_IF(g_api->GetTensorMutableData(kr_v, &kr_data));
  if (B * S == 0) return nullptr;

  Work w{};
  w.kernel = &kernel;
  w.vec = Vec{HasAvx512() && !g_force_scalar.load(std::memory_order_relaxed) && D % 16 == 0, D};
  w.q = static_cast<const float*>(data[0]);
  w.v = static_cast<const float*>(data[2]);
  w.cos = static_cast<const float*>(data[3]);
  w.sin = static_cast<const float*>(data[4]);
  w.qpos = static_cast<const float*>(data[5]);
  w.kpool = data[6];
  w.vpool = data[7];
  w.half = pool_type == ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16;
  w.table = static_cast<const int64_t*>(data[8]);
  w.slots = static_cast<const int64_t*>(data[9]);
  w.ctx = static_cast<float*>(ctx_data);
  w.kr = static_cast<float*>(kr_data);
  w.B = B;
  w.S = S;
  w.D = D;
  w.M = dims[8][1];
  w.C = dims[9][1];
  w.NB = pool[1];
  w.bs = pool[2];
  w.grp = kernel.nq / kernel.nkv;
  // The new keys after rotary (an output, and the keys the new tokens attend to).
  const auto* k_in = static_cast<const float*>(data[1]);
  for (int64_t r = 0; r < B * S; r++) {
    for (int64_t h = 0; h < kernel.nkv; h++) {
      Rotate(k_in + (r * kernel.nkv + h) * D, w.cos + r * D, w.sin + r * D, D, 1.f, w.kr + (r * kernel.nkv + h) * D);
    }
  }
  // Items of up to 32 queries, so a prefill spreads over the threads as a batch does (each item
  // transposes the keys it scores: fewer, larger items transpose less).
  w.chunk = std::min<int64_t>(S, 32);
  w.chunks = (S + w.chunk - 1) / w.chunk;
  const size_t items = static_cast<size_t>(B * kernel.nkv * w.chunks);
  if (items > 1) {
    RETURN_IF(g_api->KernelContext_ParallelFor(ctx, AttendItem, items, 0, &w));
  } else {
    AttendItem(&w, 0);
  }
  if (w.bad_block.load()) return Error("PagedAttention: a filled slot's block is outside the pool");
  return nullptr;
}

OrtStatusPtr ORT_API_CALL CreateKernelV2(const OrtCustomOp*, const OrtApi* api, const OrtKernelInfo* info, void** out) {
  auto* kernel = new Kernel();
  OrtStatusPtr st = api->KernelInfoGetAttribute_int64(info, "num_heads", &kernel->nq);
  if (st == nullptr) st = api->KernelInfoGetAttribute_int64(info, "num_kv_heads", &kernel->nkv);
  if (st == nullptr) st = api->KernelInfoGetAttribute_float(info, "scale", &kernel->scale);
  if (st == nullptr) st = api->KernelInfoGetAttribute_float(info, "softcap", &kernel->softcap);
  if (st == nullptr) st = api->KernelInfoGetAttribute_int64(info, "window", &kernel->window);
  if (st == nullptr && (kernel->nq <= 0 || kernel->nkv <= 0 || kernel->nq % kernel->nkv != 0 || kernel->window < 0)) {
    st = Error("PagedAttention: num_heads must be a positive multiple of num_kv_heads, window >= 0");
  }
  if (st != nullptr) {
    delete kernel;
    return st;
  }
  *out = kernel;
  return nullptr;
}

OrtStatusPtr ORT_API_CALL ComputeV2(void* kernel, OrtKernelContext* ctx) { return Compute(*static_cast<const Kernel*>(kernel), ctx); }
void ORT_API_CALL Destroy(void* kernel) { delete static_cast<Kernel*>(kernel); }
const char* ORT_API_CALL Name(const OrtCustomOp*) { return "PagedAttention"; }
// The pools (6, 7): float or float16, checked at run time (undefined: any type here).
ONNXTensorElementDataType ORT_API_CALL InputType(const OrtCustomOp*, size_t i) {
  if (i == 6 || i == 7) return ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
  return i >= 8 ? ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64 : ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
}
size_t ORT_API_CALL InputCount(const OrtCustomOp*) { return 10; }
ONNXTensorElementDataType ORT_API_CALL OutputType(const OrtCustomOp*, size_t) { return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT; }
size_t ORT_API_CALL OutputCount(const OrtCustomOp*) { return 2; }

OrtCustomOp g_op = gsop::MakeCpuOp({Name, InputType, InputCount, OutputType, OutputCount, CreateKernelV2, ComputeV2, Destroy});

}  // namespace

OrtCustomOp* PagedAttentionOp(const OrtApi* api) {
  g_api = api;
  return &g_op;
}

void PagedAttentionForceScalar(bool scalar) { g_force_scalar.store(scalar, std::memory_order_relaxed); }

const char* PagedAttentionKernelName() { return HasAvx512() && !g_force_scalar.load(std::memory_order_relaxed) ? "avx512" : "scalar"; }
