// The custom operator `ai.gemma_serve.MatMulQ4` (CPU): q4gemm.h's matmul inside an ONNX graph.
// Inputs and attributes are MatMulNBits' for bits 4, block_size 32, no zero points, float:
//   A float [..., K], B uint8 [N, ceil(K/32), 16], scales float [N * ceil(K/32)]; attributes K, N.
//   Y float [..., N].
// Rows are quantized, then column chunks run on ONNX Runtime's intra-op threads.
#include "q4op.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "attnop.h"
#include "cpu_op.h"
#include "q4gemm.h"

namespace {

const OrtApi* g_api = nullptr;

struct Kernel {
  int64_t k = 0;
  int64_t n = 0;
  gsq4::PackedWeights packed;  // empty where B or scales are not initializers, or no AVX-512 VNNI
};

OrtStatusPtr Error(const std::string& msg) { return g_api->CreateStatus(ORT_INVALID_ARGUMENT, msg.c_str()); }

#define RETURN_IF(expr)                  \
  do {                                   \
    if (OrtStatusPtr st__ = (expr)) return st__; \
  } while (0)

struct Work {
  const float* a;
  const uint8_t* w;
  const float* sw;
  const gsq4::PackedWeights* packed;
  float* y;
  int64_t k, n, chunk, rows_per_item;
  gsq4::QuantizedRows* rows;
};

void QuantizeItem(void* p, size_t i) {
  auto* work = static_cast<Work*>(p);
  const int64_t r0 = static_cast<int64_t>(i) * work->rows_per_item;
  const int64_t r1 = std::min(work->rows->rows, r0 + work->rows_per_item);
  gsq4::QuantizeRows(work->a, work->k, r0, r1, work->rows);
}

void ColumnsItem(void* p, size_t i) {
  auto* work = static_cast<Work*>(p);
  const int64_t n0 = static_cast<int64_t>(i) * work->chunk;
  const int64_t n1 = std::min(work->n, n0 + work->chunk);
  gsq4::GemmColumns(*work->rows, work->w, work->sw, work->packed, n0, n1, work->y, work->n);
}

OrtStatusPtr Compute(void* state, OrtKernelContext* ctx) {
  const auto* kernel = static_cast<const Kernel*>(state);
  const OrtValue* a_v = nullptr;
  const OrtValue* w_v = nullptr;
  const OrtValue* s_v = nullptr;
  RETURN_IF(g_api->KernelContext_GetInput(ctx, 0, &a_v));
  RETURN_IF(g_api->KernelContext_GetInput(ctx, 1, &w_v));
  RETURN_IF(g_api->KernelContext_GetInput(ctx, 2, &s_v));
  OrtTensorTypeAndShapeInfo* info = nullptr;
  RETURN_IF(g_api->GetTensorTypeAndShape(a_v, &info));
  size_t rank = 0;
  OrtStatusPtr st = g_api->GetDimensionsCount(info, &rank);
  std::vector<int64_t> dims(rank);
  if (st == nullptr) st = g_api->GetDimensions(info, dims.data(), rank);
  g_api->ReleaseTensorTypeAndShapeInfo(info);
  if (st != nullptr) return st;
  if (rank < 1 || dims.back() != kernel->k) {
    return Error("MatMulQ4: A's last dimension must be K = " + std::to_string(kernel->k));
  }
  int64_t m = 1;
  for (size_t i = 0; i + 1 < rank; i++) m *= dims[i];
  dims.back() = kernel->n;
  OrtValue* y_v = nullptr;
  RETURN_IF(g_api->KernelContext_GetOutput(ctx, 0, dims.data(), dims.size(), &y_v));
  const void* a = nullptr;
  const void* w = nullptr;
  const void* sw = nullptr;
  void* y = nullptr;
  RETURN_IF(g_api->GetTensorData(a_v, &a));
  RETURN_IF(g_api->GetTensorData(w_v, &w));
  RETURN_IF(g_api->GetTensorData(s_v, &sw));
  RETURN_IF(g_api->GetTensorMutableData(y_v, &y));
  if (m == 0) return nullptr;

  thread_local gsq4::QuantizedRows rows;
  Work work{};
  work.a = static_cast<const float*>(a);
  work.w = static_cast<const uint8_t*>(w);
  work.sw = static_cast<const float*>(sw);
  work.packed = &kernel->packed;
  work.y = static_cast<float*>(y);
  work.k = kernel->k;
  work.n = kernel->n;
  work.rows = &rows;
  gsq4::Resize(&rows, m, (kernel->k + 31) / 32);
  work.rows_per_item = 4;
  const size_t row_items = static_cast<size_t>((m + work.rows_per_item - 1) / work.rows_per_item);
  if (row_items > 1) {
    RETURN_IF(g_api->KernelContext_ParallelFor(ctx, QuantizeItem, row_items, 0, &work));
  } else {
    QuantizeItem(&work, 0);
  }
  // Column chunks of whole 4-panel tiles, at most 64 items (fewer where N is small), so both
  // decode (small M) and prefill spread over the threads.
  constexpr int64_t kTile = 4 * gsq4::kPanelColumns;
  work.chunk = std::max<int64_t>(kTile, (kernel->n / 64 + kTile - 1) / kTile * kTile);
  const size_t items = static_cast<size_t>((kernel->n + work.chunk - 1) / work.chunk);
  return g_api->KernelContext_ParallelFor(ctx, ColumnsItem, items, 0, &work);
}

// After packing, the original weights are not read again by the AVX-512 kernel. Where ONNX
// Runtime memory-mapped them from the external data file (a private, file-backed mapping it never
// writes), their pages are handed back to the page cache; anything else (heap copies) is left
// alone. A later read (the scalar kernel, or a node sharing the initializer, as the tied
// embedding does) faults them in again from the file.
struct Range {
  uintptr_t begin;
  uintptr_t end;
  bool file_backed;
};

void ReleaseMappedPages(Range* ranges, size_t count) {
  FILE* maps = std::fopen("/proc/self/maps", "r");
  if (maps == nullptr) return;
  char line[4096];
  while (std::fgets(line, sizeof line, maps) != nullptr) {
    unsigned long lo = 0, hi = 0, inode = 0;
    char perms[8] = {0};
    char path[2048] = {0};
    if (std::sscanf(line, "%lx-%lx %7s %*s %*s %lu %2047s", &lo, &hi, perms, &inode, path) < 4) continue;
    const bool file_backed = inode != 0 && path[0] == '/' && perms[3] == 'p' && std::strchr(perms, 'x') == nullptr;
    for (size_t i = 0; i < count; i++) {
      if (ranges[i].begin >= lo && ranges[i].end <= hi) ranges[i].file_backed = file_backed;
    }
  }
  std::fclose(maps);
  const uintptr_t page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
  for (size_t i = 0; i < count; i++) {
    if (!ranges[i].file_backed) continue;
    const uintptr_t from = (ranges[i].begin + page - 1) & ~(page - 1);
    const uintptr_t to = ranges[i].end & ~(page - 1);
    if (to > from) madvise(reinterpret_cast<void*>(from), to - from, MADV_DONTNEED);
  }
}

// Where B and the scales are initializers (they are in every export), rearranges them once for
// the AVX-512 kernel. Checks their sizes against K and N either way.
OrtStatusPtr PackConstants(const OrtApi* api, const OrtKernelInfo* info, Kernel* kernel) {
  const int64_t blocks = (kernel->k + 31) / 32;
  const OrtValue* values[2] = {nullptr, nullptr};
  for (size_t i = 0; i < 2; i++) {
    int constant = 0;
    RETURN_IF(api->KernelInfoGetConstantInput_tensor(info, i + 1, &constant, &values[i]));
    if (!constant) return nullptr;
  }
  const size_t want[2] = {static_cast<size_t>(kernel->n * blocks * 16), static_cast<size_t>(kernel->n * blocks)};
  const void* data[2] = {nullptr, nullptr};
  for (size_t i = 0; i < 2; i++) {
    OrtTensorTypeAndShapeInfo* shape = nullptr;
    RETURN_IF(api->GetTensorTypeAndShape(values[i], &shape));
    size_t count = 0;
    OrtStatusPtr st = api->GetTensorShapeElementCount(shape, &count);
    api->ReleaseTensorTypeAndShapeInfo(shape);
    if (st != nullptr) return st;
    if (count != want[i]) {
      return Error(std::string("MatMulQ4: ") + (i == 0 ? "B" : "scales") + " has " + std::to_string(count) +
                   " elements, " + std::to_string(want[i]) + " expected for K and N");
    }
    RETURN_IF(api->GetTensorData(values[i], &data[i]));
  }
  if (gsq4::Pack(static_cast<const uint8_t*>(data[0]), static_cast<const float*>(data[1]), kernel->n, blocks, &kernel->packed)) {
    const auto at = [](const void* p) { return reinterpret_cast<uintptr_t>(p); };
    Range ranges[2] = {{at(data[0]), at(data[0]) + want[0], false},
                       {at(data[1]), at(data[1]) + want[1] * sizeof(float), false}};
    ReleaseMappedPages(ranges, 2);
  }
  return nullptr;
}

OrtStatusPtr ORT_API_CALL CreateKernelV2(const OrtCustomOp*, const OrtApi* api, const OrtKernelInfo* info, void** out) {
  auto* kernel = new Kernel();
  OrtStatusPtr st = api->KernelInfoGetAttribute_int64(info, "K", &kernel->k);
  if (st == nullptr) st = api->KernelInfoGetAttribute_int64(info, "N", &kernel->n);
  if (st == nullptr && (kernel->k <= 0 || kernel->n <= 0)) st = Error("MatMulQ4: K and N must be positive");
  if (st == nullptr) st = PackConstants(api, info, kernel);
  if (st != nullptr) {
    delete kernel;
    return st;
  }
  *out = kernel;
  return nullptr;
}

OrtStatusPtr ORT_API_CALL ComputeV2(void* kernel, OrtKernelContext* ctx) { return Compute(kernel, ctx); }
void ORT_API_CALL Destroy(void* kernel) { delete static_cast<Kernel*>(kernel); }
const char* ORT_API_CALL Name(const OrtCustomOp*) { return "MatMulQ4"; }
ONNXTensorElementDataType ORT_API_CALL InputType(const OrtCustomOp*, size_t i) {
  return i == 1 ? ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8 : ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
}
size_t ORT_API_CALL InputCount(const OrtCustomOp*) { return 3; }
ONNXTensorElementDataType ORT_API_CALL OutputType(const OrtCustomOp*, size_t) { return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT; }
size_t ORT_API_CALL OutputCount(const OrtCustomOp*) { return 1; }

OrtCustomOp g_op = gsop::MakeCpuOp({Name, InputType, InputCount, OutputType, OutputCount, CreateKernelV2, ComputeV2, Destroy});
OrtCustomOpDomain* g_domain = nullptr;

}  // namespace

OrtStatusPtr GemmaServeOpDomain(const OrtApi* api, OrtCustomOpDomain** out) {
  // Called under the addon's init lock; the domain lives as long as the process.
  if (g_domain == nullptr) {
    g_api = api;
    OrtCustomOpDomain* domain = nullptr;
    RETURN_IF(api->CreateCustomOpDomain(kGemmaServeDomain, &domain));
    for (OrtCustomOp* op : {&g_op, PagedAttentionOp(api)}) {
      if (OrtStatusPtr st = api->CustomOpDomain_Add(domain, op)) {
        api->ReleaseCustomOpDomain(domain);
        return st;
      }
    }
    g_domain = domain;
  }
  *out = g_domain;
  return nullptr;
}
