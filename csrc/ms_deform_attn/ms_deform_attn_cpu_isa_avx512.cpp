// The CPU kernels compiled for AVX-512; used only when sam_detr::cpu_isa() selects it, so the build
// needs no -m flags and the extension still runs on any x86-64.
#include "ms_deform_attn/ms_deform_attn_cpu.h"

#if SAM_DETR_CPU_X86_VARIANTS

#pragma GCC push_options
#pragma GCC target("avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")

#define SAM_DETR_MSDA_VEC_BYTES 64
#include "ms_deform_attn/ms_deform_attn_cpu_kernel.h"

namespace sam_detr {
namespace ms_deform_attn_cpu {

template <>
Kernels<float> kernels<CpuIsa::kAvx512, float>() {
  return make_kernels<float>();
}

template <>
Kernels<double> kernels<CpuIsa::kAvx512, double>() {
  return make_kernels<double>();
}

}  // namespace ms_deform_attn_cpu
}  // namespace sam_detr

#pragma GCC pop_options

#endif  // SAM_DETR_CPU_X86_VARIANTS
