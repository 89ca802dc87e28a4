// The custom operator ai.gemma_serve.PagedAttention (attnop.cc): a paged layer's attention in one node.
#pragma once

#include "onnxruntime_c_api.h"

// The op, for the addon's domain (q4op.cc adds it beside MatMulQ4).
OrtCustomOp* PagedAttentionOp(const OrtApi* api);

// Forces the plain C++ path (true) or restores the AVX-512 one where the CPU has it (false).
void PagedAttentionForceScalar(bool scalar);

// "avx512" or "scalar": the path PagedAttention takes for a head dim that is a multiple of 16.
const char* PagedAttentionKernelName();
