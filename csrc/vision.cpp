// Python bindings of sam_detr._C. Each op lives in its own folder: <op>/<op>.h declares the
// device-dispatching entry points, <op>/<op>_cpu.cpp and <op>/<op>_cuda.cu implement them.
#include <torch/extension.h>

#include "cpu_isa.h"
#include "ms_deform_attn/ms_deform_attn.h"
#include "roi_align/roi_align.h"

namespace sam_detr {

bool with_cuda() {
#ifdef WITH_CUDA
  return true;
#else
  return false;
#endif
}

}  // namespace sam_detr

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("with_cuda", &sam_detr::with_cuda, "whether the CUDA kernels were compiled");
  m.def("cpu_isa", [] { return sam_detr::cpu_isa_name(sam_detr::cpu_isa()); },
        "instruction set the CPU kernels of all ops use: default, avx2 or avx512 (see cpu_isa.h)");
  m.def("cpu_isas", &sam_detr::supported_cpu_isas,
        "instruction sets the CPU kernels were compiled for and this CPU runs, narrowest first");
  m.def("set_cpu_isa", &sam_detr::set_cpu_isa,
        "makes the CPU kernels of all ops use one instruction set (tests, benchmarks); returns the previous one");

  // ms_deform_attn
  m.def("ms_deform_attn_forward", &sam_detr::ms_deform_attn_forward,
        "multi-scale deformable attention forward (see ms_deform_attn/ms_deform_attn.h)");
  m.def("ms_deform_attn_backward", &sam_detr::ms_deform_attn_backward,
        "multi-scale deformable attention backward: [grad_value, grad_sampling_loc, grad_attn_weight]");

  // roi_align
  m.def("roi_align_forward", &sam_detr::roi_align_forward, "RoIAlign forward (CPU)");
  m.def("roi_align_backward", &sam_detr::roi_align_backward, "RoIAlign backward (CPU)");
}
