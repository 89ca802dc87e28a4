// gemma-serve's native runner: a small N-API addon over the ONNX Runtime C API.
//
// What the stock onnxruntime-node binding cannot do, this does through an IoBinding:
// - tensors that stay where ONNX Runtime put them between runs ("buffers": memory of the
//   session's device, CUDA memory under the CUDA provider), bound as inputs and outputs by
//   name at a byte offset, so past and present KV caches can be one buffer updated in place;
// - outputs written straight into caller-owned typed arrays (no copy into a fresh JS buffer).
// It links against the libonnxruntime.so.1 that onnxruntime-node ships, so both share one
// runtime (and one OrtEnv) in the process. Built by native/build.mjs at `npm ci`; optional.
//
// JS surface (src/engine/native/ort-native.ts types it):
//   version() -> string
//   createSession(path | [bytes, externalDataFolder], device 'cpu'|'cuda', deviceId, intraOpThreads) -> session
//   inputNames(session), outputNames(session) -> string[]
//   allocate(session, bytes) -> buffer id (device memory of the session; zeroed on CPU)
//   free(session, bufferId): gives a buffer back before the session ends (its id is not reused)
//   run(session, inputs, outputs): each an array of [name, onnxType, dims, data] where data is
//     a TypedArray (host memory), [bufferId, byteOffset] (a buffer of this session), or
//     [bufferId, byteOffset, ownerSession] (another session's buffer on the same device: one
//     session's output bound in place as the next session's input, e.g. the logits a sampler reads)
//   prepare(session, inputs, outputs) -> handle: bindings of the session's own buffers, made
//     once; run(session, inputs, outputs, handle) binds them beside its own (KV caches, step
//     after step). A run refuses them once one of their buffers was freed.
//   hostOutputBytes() -> bytes all runs have written into host-memory outputs so far (on CUDA:
//     what crossed from the device to the host; tests assert what a step brings back)
//   runNanos() -> nanoseconds all runs have spent inside ONNX Runtime (RunWithBinding and the
//     output synchronization): the rest of a run call is the binding's own host work (benches)
//   release(session)
//   q4Kernel([forceScalar]) -> "avx512vnni" | "scalar": the kernel of ai.gemma_serve.MatMulQ4,
//     the int4 matmul CPU sessions register (q4op.cc, q4gemm.cc)
//   attentionKernel([forceScalar]) -> "avx512" | "scalar": the path of ai.gemma_serve.PagedAttention
//     (attnop.cc), a paged layer's attention in one node
//   q4PackedBytes() -> bytes of packed int4 panels MatMulQ4 kernels hold in this process
#include <node_api.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "onnxruntime_c_api.h"
#include "q4gemm.h"
#include "q4op.h"
#include "attnop.h"

namespace {

const OrtApi* g_ort = nullptr;
OrtEnv* g_env = nullptr;  // one per process, shared by every worker thread that loads the addon
std::mutex g_init_mutex;
std::atomic<uint64_t> g_host_output_bytes{0};
std::atomic<uint64_t> g_run_nanos{0};

struct Buffer {
  void* ptr;
  size_t bytes;
};

struct Session {
  OrtSession* session = nullptr;
  OrtIoBinding* binding = nullptr;
  OrtMemoryInfo* cpu_info = nullptr;
  OrtMemoryInfo* device_info = nullptr;
  OrtAllocator* device_allocator = nullptr;
  OrtRunOptions* run_options = nullptr;
  bool cuda = false;
  int device_id = 0;
  bool profiling = false;
  std::vector<Buffer> buffers;
};

// An error with ONNX Runtime's message, thrown into JS by the caller.
struct Failure {
  std::string message;
};

void Check(OrtStatus* status) {
  if (status == nullptr) return;
  std::string msg = g_ort->GetErrorMessage(status);
  g_ort->ReleaseStatus(status);
  throw Failure{msg};
}

void CheckNapi(napi_env env, napi_status status, const char* what) {
  if (status != napi_ok) throw Failure{std::string("N-API call failed: ") + what};
}

size_t ElementBytes(int type) {
  switch (type) {
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT: return 4;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16: return 2;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64: return 8;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32: return 4;
    default: throw Failure{"unsupported tensor element type " + std::to_string(type)};
  }
}

size_t TypedArrayElementBytes(napi_typedarray_type t) {
  switch (t) {
    case napi_int8_array: case napi_uint8_array: case napi_uint8_clamped_array: return 1;
    case napi_int16_array: case napi_uint16_array: return 2;
    case napi_int32_array: case napi_uint32_array: case napi_float32_array: return 4;
    default: return 8;
  }
}

std::string GetString(napi_env env, napi_value v) {
  size_t len = 0;
  CheckNapi(env, napi_get_value_string_utf8(env, v, nullptr, 0, &len), "string length");
  std::string s(len, '\0');
  CheckNapi(env, napi_get_value_string_utf8(env, v, s.data(), len + 1, &len), "string");
  return s;
}

int64_t GetInt(napi_env env, napi_value v) {
  int64_t out = 0;
  CheckNapi(env, napi_get_value_int64(env, v, &out), "integer");
  return out;
}

napi_value Element(napi_env env, napi_value array, uint32_t i) {
  napi_value out;
  CheckNapi(env, napi_get_element(env, array, i, &out), "array element");
  return out;
}

uint32_t Length(napi_env env, napi_value array) {
  uint32_t n = 0;
  CheckNapi(env, napi_get_array_length(env, array, &n), "array length");
  return n;
}

std::vector<napi_value> Args(napi_env env, napi_callback_info info, size_t want) {
  std::vector<napi_value> argv(want);
  size_t argc = want;
  CheckNapi(env, napi_get_cb_info(env, info, &argc, argv.data(), nullptr, nullptr), "arguments");
  if (argc < want) throw Failure{"expected " + std::to_string(want) + " arguments"};
  return argv;
}

Session* GetSession(napi_env env, napi_value v) {
  void* p = nullptr;
  CheckNapi(env, napi_get_value_external(env, v, &p), "session handle");
  auto* s = static_cast<Session*>(p);
  if (s->session == nullptr) throw Failure{"the session was released"};
  return s;
}

void ReleaseSession(Session* s) {
  if (s->session == nullptr) return;
  for (auto& b : s->buffers) {
    if (b.ptr != nullptr) s->device_allocator->Free(s->device_allocator, b.ptr);
  }
  s->buffers.clear();
  if (s->profiling) {
    OrtAllocator* alloc = nullptr;
    char* file = nullptr;
    OrtStatus* st = g_ort->GetAllocatorWithDefaultOptions(&alloc);
    if (st == nullptr) st = g_ort->SessionEndProfiling(s->session, alloc, &file);
    if (st != nullptr) g_ort->ReleaseStatus(st);
    if (file != nullptr) alloc->Free(alloc, file);
  }
  if (s->binding) g_ort->ReleaseIoBinding(s->binding);
  if (s->run_options) g_ort->ReleaseRunOptions(s->run_options);
  if (s->device_allocator) g_ort->ReleaseAllocator(s->device_allocator);
  if (s->device_info) g_ort->ReleaseMemoryInfo(s->device_info);
  if (s->cpu_info) g_ort->ReleaseMemoryInfo(s->cpu_info);
  g_ort->ReleaseSession(s->session);
  s->session = nullptr;
}

template <typename F>
napi_value Guard(napi_env env, F&& body) {
  try {
    return body();
  } catch (const Failure& f) {
    napi_throw_error(env, nullptr, f.message.c_str());
    return nullptr;
  }
}

napi_value Version(napi_env env, napi_callback_info) {
  return Guard(env, [&] {
    napi_value out;
    CheckNapi(env, napi_create_string_utf8(env, OrtGetApiBase()->GetVersionString(), NAPI_AUTO_LENGTH, &out), "version");
    return out;
  });
}

napi_value CreateSession(napi_env env, napi_callback_info info) {
  return Guard(env, [&] {
    auto argv = Args(env, info, 4);
    // argv[0]: the model's path, or [bytes, folder of its external data] (a graph rewritten in memory)
    bool from_bytes = false;
    CheckNapi(env, napi_is_array(env, argv[0], &from_bytes), "model argument");
    std::string path;
    void* model_bytes = nullptr;
    size_t model_length = 0;
    if (from_bytes) {
      napi_value bytes = Element(env, argv[0], 0);
      bool is_typed = false;
      CheckNapi(env, napi_is_typedarray(env, bytes, &is_typed), "is typed array");
      if (!is_typed) throw Failure{"createSession: the model bytes must be a Uint8Array"};
      napi_typedarray_type t;
      napi_value ab;
      size_t offset = 0;
      CheckNapi(env, napi_get_typedarray_info(env, bytes, &t, &model_length, &model_bytes, &ab, &offset), "model bytes");
      if (t != napi_uint8_array) throw Failure{"createSession: the model bytes must be a Uint8Array"};
      path = GetString(env, Element(env, argv[0], 1));
    } else {
      path = GetString(env, argv[0]);
    }
    const std::string device = GetString(env, argv[1]);
    const int device_id = static_cast<int>(GetInt(env, argv[2]));
    const int threads = static_cast<int>(GetInt(env, argv[3]));
    if (device != "cpu" && device != "cuda") throw Failure{"unknown device " + device};

    OrtSessionOptions* opts = nullptr;
    Check(g_ort->CreateSessionOptions(&opts));
    auto session = new Session();
    try {
      Check(g_ort->SetIntraOpNumThreads(opts, threads));
      Check(g_ort->SetSessionGraphOptimizationLevel(opts, ORT_ENABLE_ALL));
      // GEMMA_SERVE_ORT_PROFILE=PREFIX: ONNX Runtime's per-node profile, written when the session
      // is released (PREFIX_<date>.json; for bench/native-profile.ts).
      if (const char* prefix = std::getenv("GEMMA_SERVE_ORT_PROFILE"); prefix != nullptr && *prefix != '\0') {
        Check(g_ort->EnableProfiling(opts, prefix));
        session->profiling = true;
      }
      if (device == "cpu") {
        // ai.gemma_serve.MatMulQ4 (q4op.cc), for the graphs that use it
        OrtCustomOpDomain* domain = nullptr;
        {
          std::lock_guard<std::mutex> lock(g_init_mutex);
          Check(GemmaServeOpDomain(g_ort, &domain));
        }
        Check(g_ort->AddCustomOpDomain(opts, domain));
      }
      if (device == "cuda") {
        OrtCUDAProviderOptionsV2* cuda = nullptr;
        Check(g_ort->CreateCUDAProviderOptions(&cuda));
        const std::string id = std::to_string(device_id);
        const char* keys[] = {"device_id"};
        const char* values[] = {id.c_str()};
        OrtStatus* st = g_ort->UpdateCUDAProviderOptions(cuda, keys, values, 1);
        if (st == nullptr) st = g_ort->SessionOptionsAppendExecutionProvider_CUDA_V2(opts, cuda);
        g_ort->ReleaseCUDAProviderOptions(cuda);
        Check(st);
        session->cuda = true;
        session->device_id = device_id;
      }
      if (from_bytes) {
        Check(g_ort->AddSessionConfigEntry(opts, "session.model_external_initializers_file_folder_path", path.c_str()));
        Check(g_ort->CreateSessionFromArray(g_env, model_bytes, model_length, opts, &session->session));
      } else {
        Check(g_ort->CreateSession(g_env, path.c_str(), opts, &session->session));
      }
      g_ort->ReleaseSessionOptions(opts);
      opts = nullptr;
      Check(g_ort->CreateIoBinding(session->session, &session->binding));
      Check(g_ort->CreateRunOptions(&session->run_options));
      Check(g_ort->CreateCpuMemoryInfo(OrtDeviceAllocator, OrtMemTypeDefault, &session->cpu_info));
      if (session->cuda) {
        Check(g_ort->CreateMemoryInfo("Cuda", OrtDeviceAllocator, device_id, OrtMemTypeDefault, &session->device_info));
      } else {
        Check(g_ort->CreateCpuMemoryInfo(OrtDeviceAllocator, OrtMemTypeDefault, &session->device_info));
      }
      Check(g_ort->CreateAllocator(session->session, session->device_info, &session->device_allocator));
    } catch (...) {
      if (opts) g_ort->ReleaseSessionOptions(opts);
      if (session->session) ReleaseSession(session);
      delete session;
      throw;
    }
    napi_value out;
    CheckNapi(env, napi_create_external(env, session, [](napi_env, void* p, void*) {
      auto* s = static_cast<Session*>(p);
      ReleaseSession(s);
      delete s;
    }, nullptr, &out), "external");
    return out;
  });
}

napi_value Names(napi_env env, napi_callback_info info, bool inputs) {
  auto argv = Args(env, info, 1);
  Session* s = GetSession(env, argv[0]);
  size_t n = 0;
  Check(inputs ? g_ort->SessionGetInputCount(s->session, &n) : g_ort->SessionGetOutputCount(s->session, &n));
  OrtAllocator* alloc = nullptr;
  Check(g_ort->GetAllocatorWithDefaultOptions(&alloc));
  napi_value out;
  CheckNapi(env, napi_create_array_with_length(env, n, &out), "array");
  for (size_t i = 0; i < n; i++) {
    char* name = nullptr;
    Check(inputs ? g_ort->SessionGetInputName(s->session, i, alloc, &name) : g_ort->SessionGetOutputName(s->session, i, alloc, &name));
    napi_value v;
    CheckNapi(env, napi_create_string_utf8(env, name, NAPI_AUTO_LENGTH, &v), "name");
    alloc->Free(alloc, name);
    CheckNapi(env, napi_set_element(env, out, static_cast<uint32_t>(i), v), "set element");
  }
  return out;
}

napi_value InputNames(napi_env env, napi_callback_info info) {
  return Guard(env, [&] { return Names(env, info, true); });
}

napi_value OutputNames(napi_env env, napi_callback_info info) {
  return Guard(env, [&] { return Names(env, info, false); });
}

napi_value Allocate(napi_env env, napi_callback_info info) {
  return Guard(env, [&] {
    auto argv = Args(env, info, 2);
    Session* s = GetSession(env, argv[0]);
    const int64_t bytes = GetInt(env, argv[1]);
    if (bytes <= 0) throw Failure{"allocate: bytes must be positive"};
    void* ptr = nullptr;
    Check(g_ort->AllocatorAlloc(s->device_allocator, static_cast<size_t>(bytes), &ptr));
    if (ptr == nullptr) throw Failure{"allocate: out of device memory (" + std::to_string(bytes) + " bytes)"};
    if (!s->cuda) std::memset(ptr, 0, static_cast<size_t>(bytes));
    s->buffers.push_back({ptr, static_cast<size_t>(bytes)});
    napi_value out;
    CheckNapi(env, napi_create_uint32(env, static_cast<uint32_t>(s->buffers.size() - 1), &out), "id");
    return out;
  });
}

napi_value Free(napi_env env, napi_callback_info info) {
  return Guard(env, [&] {
    auto argv = Args(env, info, 2);
    Session* s = GetSession(env, argv[0]);
    const int64_t id = GetInt(env, argv[1]);
    if (id < 0 || static_cast<size_t>(id) >= s->buffers.size()) throw Failure{"free: unknown buffer " + std::to_string(id)};
    Buffer& b = s->buffers[static_cast<size_t>(id)];
    if (b.ptr != nullptr) s->device_allocator->Free(s->device_allocator, b.ptr);
    b = {nullptr, 0};
    napi_value undefined;
    napi_get_undefined(env, &undefined);
    return undefined;
  });
}

napi_value RunNanos(napi_env env, napi_callback_info) {
  return Guard(env, [&] {
    napi_value out;
    CheckNapi(env, napi_create_double(env, static_cast<double>(g_run_nanos.load()), &out), "nanos");
    return out;
  });
}

napi_value HostOutputBytes(napi_env env, napi_callback_info) {
  return Guard(env, [&] {
    napi_value out;
    CheckNapi(env, napi_create_double(env, static_cast<double>(g_host_output_bytes.load()), &out), "bytes");
    return out;
  });
}

// A buffer a value was made over: which one, and its memory then (a freed buffer's is null).
struct BufferUse {
  size_t id;
  void* ptr;
};

// One [name, type, dims, data] spec → an OrtValue over the caller's memory (never copied).
// `*host_bytes`: its bytes when they are host memory (a typed array), else 0. `*use`, when given:
// the session's own buffer the value is over (a spec of any other memory is refused then).
OrtValue* MakeValue(napi_env env, Session* s, napi_value spec, std::string* name, size_t* host_bytes, BufferUse* use = nullptr) {
  *name = GetString(env, Element(env, spec, 0));
  const int type = static_cast<int>(GetInt(env, Element(env, spec, 1)));
  napi_value dims_v = Element(env, spec, 2);
  std::vector<int64_t> dims(Length(env, dims_v));
  size_t count = 1;
  for (uint32_t i = 0; i < dims.size(); i++) {
    dims[i] = GetInt(env, Element(env, dims_v, i));
    if (dims[i] < 0) throw Failure{*name + ": negative dimension"};
    count *= static_cast<size_t>(dims[i]);
  }
  const size_t need = count * ElementBytes(type);
  napi_value data = Element(env, spec, 3);
  bool is_typed = false;
  CheckNapi(env, napi_is_typedarray(env, data, &is_typed), "is typed array");
  void* ptr = nullptr;
  size_t have = 0;
  const OrtMemoryInfo* where = s->cpu_info;
  if (is_typed) {
    napi_typedarray_type t;
    size_t length = 0;
    napi_value ab;
    size_t offset = 0;
    CheckNapi(env, napi_get_typedarray_info(env, data, &t, &length, &ptr, &ab, &offset), "typed array");
    have = length * TypedArrayElementBytes(t);
    *host_bytes = need;
    if (use != nullptr) throw Failure{*name + ": only the session's own buffers can be prepared"};
  } else {
    const int64_t id = GetInt(env, Element(env, data, 0));
    const int64_t offset = GetInt(env, Element(env, data, 1));
    // A third element: the session that owns the buffer. Its memory is usable here only on the
    // same device (on CUDA, the same device id); ONNX Runtime synchronizes the owner's run before
    // that run returns, so the data is complete when this session reads it.
    const Session* owner = s;
    if (Length(env, data) > 2) {
      if (use != nullptr) throw Failure{*name + ": only the session's own buffers can be prepared"};
      owner = GetSession(env, Element(env, data, 2));
      if (owner->cuda != s->cuda || owner->device_id != s->device_id) throw Failure{*name + ": the buffer is on another device"};
    }
    if (id < 0 || static_cast<size_t>(id) >= owner->buffers.size()) throw Failure{*name + ": unknown buffer " + std::to_string(id)};
    const Buffer& b = owner->buffers[static_cast<size_t>(id)];
    if (b.ptr == nullptr) throw Failure{*name + ": buffer " + std::to_string(id) + " was freed"};
    if (offset < 0 || static_cast<size_t>(offset) > b.bytes) throw Failure{*name + ": offset outside the buffer"};
    ptr = static_cast<char*>(b.ptr) + offset;
    have = b.bytes - static_cast<size_t>(offset);
    if (use != nullptr) *use = {static_cast<size_t>(id), b.ptr};
    where = owner->device_info;
    *host_bytes = 0;
  }
  if (have < need) {
    throw Failure{*name + ": " + std::to_string(need) + " bytes needed for its shape, " + std::to_string(have) + " given"};
  }
  OrtValue* value = nullptr;
  Check(g_ort->CreateTensorWithDataAsOrtValue(where, ptr, need, dims.data(), dims.size(),
                                              static_cast<ONNXTensorElementDataType>(type), &value));
  return value;
}

// Each spec of the inputs list then the outputs list (lists[0], lists[1]) made into a value (f
// owns it then): f(io, name, value, host_bytes, use). `prepared`: only the session's own buffers.
template <typename F>
void ForEachValue(napi_env env, Session* s, const napi_value* lists, bool prepared, F&& f) {
  for (int io = 0; io < 2; io++) {
    const uint32_t n = Length(env, lists[io]);
    for (uint32_t i = 0; i < n; i++) {
      std::string name;
      size_t host_bytes = 0;
      BufferUse use{};
      OrtValue* v = MakeValue(env, s, Element(env, lists[io], i), &name, &host_bytes, prepared ? &use : nullptr);
      f(io, name, v, host_bytes, use);
    }
  }
}

// Bindings made once and bound run after run (prepare): values over the session's own buffers
// (KV caches), so a run parses and creates only the bindings that change.
struct Prepared {
  const Session* session;
  std::vector<std::pair<std::string, OrtValue*>> values[2];  // inputs, outputs
  std::vector<BufferUse> buffers;

  ~Prepared() {
    for (auto& side : values) {
      for (auto& nv : side) g_ort->ReleaseValue(nv.second);
    }
  }
};

// prepare(session, inputs, outputs) -> handle: specs as run's, of the session's own buffers only.
napi_value Prepare(napi_env env, napi_callback_info info) {
  return Guard(env, [&] {
    auto argv = Args(env, info, 3);
    Session* s = GetSession(env, argv[0]);
    auto p = std::make_unique<Prepared>();
    p->session = s;
    ForEachValue(env, s, &argv[1], true, [&](int io, std::string& name, OrtValue* v, size_t, const BufferUse& use) {
      p->values[io].emplace_back(std::move(name), v);
      p->buffers.push_back(use);
    });
    napi_value out;
    CheckNapi(env, napi_create_external(env, p.get(), [](napi_env, void* data, void*) { delete static_cast<Prepared*>(data); }, nullptr, &out), "prepared handle");
    p.release();
    return out;
  });
}

// run(session, inputs, outputs[, prepared])
napi_value Run(napi_env env, napi_callback_info info) {
  return Guard(env, [&] {
    size_t argc = 4;
    napi_value argv[4];
    CheckNapi(env, napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr), "arguments");
    if (argc < 3) throw Failure{"expected 3 arguments"};
    Session* s = GetSession(env, argv[0]);
    const Prepared* prepared = nullptr;
    napi_valuetype t4 = napi_undefined;
    if (argc > 3) CheckNapi(env, napi_typeof(env, argv[3], &t4), "prepared");
    if (t4 != napi_undefined) {
      void* p = nullptr;
      CheckNapi(env, napi_get_value_external(env, argv[3], &p), "prepared handle");
      prepared = static_cast<const Prepared*>(p);
      if (prepared->session != s) throw Failure{"prepared bindings of another session"};
      for (const BufferUse& u : prepared->buffers) {
        if (u.id >= s->buffers.size() || s->buffers[u.id].ptr != u.ptr) throw Failure{"a prepared binding's buffer " + std::to_string(u.id) + " was freed"};
      }
    }
    std::vector<OrtValue*> values;
    size_t host_out = 0;
    auto release = [&] {
      g_ort->ClearBoundInputs(s->binding);
      g_ort->ClearBoundOutputs(s->binding);
      for (OrtValue* v : values) g_ort->ReleaseValue(v);
    };
    auto bind = [&](int io, const std::string& name, OrtValue* v) {
      Check(io == 0 ? g_ort->BindInput(s->binding, name.c_str(), v) : g_ort->BindOutput(s->binding, name.c_str(), v));
    };
    try {
      ForEachValue(env, s, &argv[1], false, [&](int io, std::string& name, OrtValue* v, size_t host_bytes, const BufferUse&) {
        values.push_back(v);
        if (io == 1) host_out += host_bytes;
        bind(io, name, v);
      });
      if (prepared != nullptr) {
        for (int io = 0; io < 2; io++) {
          for (const auto& nv : prepared->values[io]) bind(io, nv.first, nv.second);
        }
      }
      const auto t0 = std::chrono::steady_clock::now();
      Check(g_ort->RunWithBinding(s->session, s->run_options, s->binding));
      Check(g_ort->SynchronizeBoundOutputs(s->binding));
      g_run_nanos += static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - t0).count());
      g_host_output_bytes += host_out;
    } catch (...) {
      release();
      throw;
    }
    release();
    napi_value undefined;
    napi_get_undefined(env, &undefined);
    return undefined;
  });
}

napi_value Release(napi_env env, napi_callback_info info) {
  return Guard(env, [&] {
    auto argv = Args(env, info, 1);
    void* p = nullptr;
    CheckNapi(env, napi_get_value_external(env, argv[0], &p), "session handle");
    ReleaseSession(static_cast<Session*>(p));
    napi_value undefined;
    napi_get_undefined(env, &undefined);
    return undefined;
  });
}

// A kernel switch: with no argument, the path `name()` says runs here; with a boolean, sets
// `force(scalar)` first (for tests and benches).
napi_value KernelSwitch(napi_env env, napi_callback_info info, void (*force)(bool), const char* (*name)()) {
  return Guard(env, [&] {
    size_t argc = 1;
    napi_value argv[1];
    CheckNapi(env, napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr), "arguments");
    if (argc >= 1) {
      bool scalar = false;
      CheckNapi(env, napi_get_value_bool(env, argv[0], &scalar), "boolean");
      force(scalar);
    }
    napi_value out;
    CheckNapi(env, napi_create_string_utf8(env, name(), NAPI_AUTO_LENGTH, &out), "kernel");
    return out;
  });
}

// q4Kernel([forceScalar]) -> the kernel MatMulQ4 runs here: "avx512vnni" or "scalar".
napi_value Q4Kernel(napi_env env, napi_callback_info info) { return KernelSwitch(env, info, gsq4::ForceScalar, gsq4::KernelName); }

// attentionKernel([forceScalar]) -> the path PagedAttention takes here: "avx512" or "scalar".
napi_value AttentionKernel(napi_env env, napi_callback_info info) {
  return KernelSwitch(env, info, PagedAttentionForceScalar, PagedAttentionKernelName);
}

// q4PackedBytes() -> the bytes of packed weights the process's MatMulQ4 kernels hold (tests: the
// bits a weight of the packed layout).
napi_value Q4PackedBytes(napi_env env, napi_callback_info) {
  return Guard(env, [&] {
    napi_value out;
    CheckNapi(env, napi_create_int64(env, gsq4::PackedBytes(), &out), "bytes");
    return out;
  });
}

napi_value Init(napi_env env, napi_value exports) {
  std::lock_guard<std::mutex> lock(g_init_mutex);
  g_ort = OrtGetApiBase()->GetApi(ORT_API_VERSION);
  if (g_ort == nullptr) {
    napi_throw_error(env, nullptr, "libonnxruntime does not provide the C API version this addon was built for");
    return nullptr;
  }
  if (g_env == nullptr) {
    OrtStatus* st = g_ort->CreateEnv(ORT_LOGGING_LEVEL_WARNING, "gemma-serve", &g_env);
    if (st != nullptr) {
      napi_throw_error(env, nullptr, g_ort->GetErrorMessage(st));
      g_ort->ReleaseStatus(st);
      return nullptr;
    }
  }
  const napi_property_descriptor props[] = {
      {"version", nullptr, Version, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"createSession", nullptr, CreateSession, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"inputNames", nullptr, InputNames, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"outputNames", nullptr, OutputNames, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"allocate", nullptr, Allocate, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"free", nullptr, Free, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"hostOutputBytes", nullptr, HostOutputBytes, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"runNanos", nullptr, RunNanos, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"run", nullptr, Run, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"prepare", nullptr, Prepare, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"release", nullptr, Release, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"q4Kernel", nullptr, Q4Kernel, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"attentionKernel", nullptr, AttentionKernel, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"q4PackedBytes", nullptr, Q4PackedBytes, nullptr, nullptr, nullptr, napi_default, nullptr},
  };
  napi_define_properties(env, exports, sizeof(props) / sizeof(props[0]), props);
  return exports;
}

}  // namespace

NAPI_MODULE(NODE_GYP_MODULE_NAME, Init)
