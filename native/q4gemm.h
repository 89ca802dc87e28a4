// gemma-serve's int4 matmul for the CPU: C[M, N] = A[M, K] · Wᵀ, with W stored as ONNX Runtime's
// com.microsoft.MatMulNBits stores it (bits 4, block 32, no zero points: the implicit zero 8,
// float32 scales) and the activations quantized to int8 per block of 32, as MatMulNBits does at
// accuracy_level 4. Same inputs, same arithmetic; a kernel written for small M (decode batches)
// on AVX-512 VNNI, where ONNX Runtime's spends most of a decode step.
//
//   C[m, n] = Σ_blocks sa[m, b] · sw[n, b] · Σ_{i<32} qa[m, b, i] · (qw[n, b, i] - 8)
//   sa = max|a| / 127 over the block, qa = round-half-even(a · 127 / max|a|)
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace gsq4 {

// A's rows quantized, row by row, block by block (the last block zero-padded past K):
//   q:     [rows, blocks · 32] int8, in A's order;
//   corr:  [rows, blocks] int32, -8 · Σ qa over the block (the zero point's share of the dot);
//   scale: [rows, blocks] float, the block's sa.
struct QuantizedRows {
  int64_t rows = 0;
  int64_t blocks = 0;
  std::vector<int8_t> q;
  std::vector<int32_t> corr;
  std::vector<float> scale;
};

// Quantizes rows [r0, r1) of A [M, K] into `out` (sized by Resize beforehand).
void QuantizeRows(const float* a, int64_t k, int64_t r0, int64_t r1, QuantizedRows* out);
void Resize(QuantizedRows* out, int64_t rows, int64_t blocks);

// The weights rearranged for the AVX-512 kernel: panels of 16 columns, one per int32 lane, each
// a sequential stream of blocks. A panel's block is 4 × 64 bytes of nibbles, step s holding in
// lane c the bytes w[8s + j] | w[8s + 4 + j] << 4 (j < 4) of column c, then the 16 columns'
// scales (zero-padded past N). Where every scale of the matrix is an fp16 value (exports that
// round them so, manifest `scaleRounding`), the scales are stored fp16 and a group is 2 blocks:
// 2 × 256 bytes of nibbles then 2 × 32 bytes of scales (576 bytes, 9 cache lines; an odd last
// block is padded with zeros): 18 bytes a column per 32 weights, 4.5 bits a weight, as
// llama.cpp's Q4_0. Otherwise (older exports) a group is 1 block with float32 scales (320 bytes,
// 5 bits a weight), so their numbers are unchanged. Made once, when the session builds the kernel.
struct PackedWeights {
  int64_t n = 0;             // columns (the last panel is zero-padded past them)
  bool half_scales = false;  // fp16 scales, 2-block groups (else float32, 1-block groups)
  size_t bytes = 0;          // of data
  uint8_t* data = nullptr;   // 64-byte aligned
  PackedWeights() = default;
  PackedWeights(const PackedWeights&) = delete;
  PackedWeights& operator=(const PackedWeights&) = delete;
  ~PackedWeights();
};

// Columns a panel holds: GemmColumns' n0 must be a multiple of it.
constexpr int64_t kPanelColumns = 16;

// Packs MatMulNBits' w [N, blocks, 16] uint8 and sw [N, blocks] float; false (nothing packed)
// where the CPU has no AVX-512 VNNI.
bool Pack(const uint8_t* w, const float* sw, int64_t n, int64_t blocks, PackedWeights* out);

// Whether float `s` is exactly an IEEE half value (±0 included; never Inf or NaN).
bool IsHalfExact(float s);

// Bytes of packed panels all live PackedWeights hold, process-wide (tests, the bits a weight).
int64_t PackedBytes();

// Columns [n0, n1) of C [M, N] (ldc = N; n0 a multiple of kPanelColumns) from the quantized
// rows: the AVX-512 kernel over `packed` where there is one, else the scalar kernel over w and sw.
void GemmColumns(const QuantizedRows& a, const uint8_t* w, const float* sw, const PackedWeights* packed,
                 int64_t n0, int64_t n1, float* c, int64_t ldc);

// The kernel GemmColumns uses: "avx512vnni" or "scalar" (plain C++, any CPU: the reference).
const char* KernelName();
// Forces the scalar kernel (true) or restores the CPU's best (false). For tests and benches.
void ForceScalar(bool scalar);

}  // namespace gsq4
