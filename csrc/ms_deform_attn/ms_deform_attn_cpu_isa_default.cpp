// The portable CPU kernels: the compiler's baseline for the target (SSE2 on x86-64).
#include "ms_deform_attn/ms_deform_attn_cpu.h"

#define SAM_DETR_MSDA_VEC_BYTES 16
#include "ms_deform_attn/ms_deform_attn_cpu_kernel.h"

namespace sam_detr {
namespace ms_deform_attn_cpu {

template <>
Kernels<float> kernels<CpuIsa::kDefault, float>() {
  return make_kernels<float>();
}

template <>
Kernels<double> kernels<CpuIsa::kDefault, double>() {
  return make_kernels<double>();
}

}  // namespace ms_deform_attn_cpu
}  // namespace sam_detr
