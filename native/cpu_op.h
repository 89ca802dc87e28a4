// What gemma-serve's CPU custom operators (q4op.cc, attnop.cc) share: an OrtCustomOp on the CPU
// provider, every input and output required and in default memory, from opset version 1 on,
// with the V2 kernel entry points.
#pragma once

#include <climits>

#include "onnxruntime_c_api.h"

namespace gsop {

struct CpuOpSpec {
  const char*(ORT_API_CALL* name)(const OrtCustomOp*);
  ONNXTensorElementDataType(ORT_API_CALL* input_type)(const OrtCustomOp*, size_t);
  size_t(ORT_API_CALL* input_count)(const OrtCustomOp*);
  ONNXTensorElementDataType(ORT_API_CALL* output_type)(const OrtCustomOp*, size_t);
  size_t(ORT_API_CALL* output_count)(const OrtCustomOp*);
  OrtStatusPtr(ORT_API_CALL* create)(const OrtCustomOp*, const OrtApi*, const OrtKernelInfo*, void**);
  OrtStatusPtr(ORT_API_CALL* compute)(void*, OrtKernelContext*);
  void(ORT_API_CALL* destroy)(void*);
};

inline const char* ORT_API_CALL CpuProvider(const OrtCustomOp*) { return "CPUExecutionProvider"; }
inline OrtCustomOpInputOutputCharacteristic ORT_API_CALL Required(const OrtCustomOp*, size_t) { return INPUT_OUTPUT_REQUIRED; }
inline OrtMemType ORT_API_CALL DefaultMemory(const OrtCustomOp*, size_t) { return OrtMemTypeDefault; }
inline int ORT_API_CALL One(const OrtCustomOp*) { return 1; }
inline int ORT_API_CALL NoEndVersion(const OrtCustomOp*) { return INT_MAX; }

inline OrtCustomOp MakeCpuOp(const CpuOpSpec& spec) {
  OrtCustomOp op{};
  op.version = ORT_API_VERSION;
  op.GetName = spec.name;
  op.GetExecutionProviderType = CpuProvider;
  op.GetInputType = spec.input_type;
  op.GetInputTypeCount = spec.input_count;
  op.GetOutputType = spec.output_type;
  op.GetOutputTypeCount = spec.output_count;
  op.KernelDestroy = spec.destroy;
  op.GetInputCharacteristic = Required;
  op.GetOutputCharacteristic = Required;
  op.GetInputMemoryType = DefaultMemory;
  op.GetVariadicInputMinArity = One;
  op.GetVariadicInputHomogeneity = One;
  op.GetVariadicOutputMinArity = One;
  op.GetVariadicOutputHomogeneity = One;
  op.CreateKernelV2 = spec.create;
  op.KernelComputeV2 = spec.compute;
  op.GetStartVersion = One;
  op.GetEndVersion = NoEndVersion;
  return op;
}

}  // namespace gsop
