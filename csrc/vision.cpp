// Python bindings of sam_detr._C. Each op lives in its own folder: <op>/<op>.h declares the
// device-dispatching entry points, <op>/<op>_cpu.cpp and <op>/<op>_cuda.cu implement them.
#include <torch/extension.h>

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

  // ms_deform_attn
  m.def("ms_deform_attn_forward", &sam_detr::ms_deform_attn_forward,
        "multi-scale deformable attention forward (see ms_deform_attn/ms_deform_attn.h)");
  m.def("ms_deform_attn_backward", &sam_detr::ms_deform_attn_backward,
        "multi-scale deformable attention backward: [grad_value, grad_sampling_loc, grad_attn_weight]");

  // roi_align
  m.def("roi_align_forward", &sam_detr::roi_align_forward, "RoIAlign forward (CPU)");
  m.def("roi_align_backward", &sam_detr::roi_align_backward, "RoIAlign backward (CPU)");
  m.def("roi_align_cpu_isas", &sam_detr::roi_align_cpu_isas,
        "instruction sets the RoIAlign CPU kernels can use here");
  m.def("roi_align_set_cpu_isa", &sam_detr::roi_align_set_cpu_isa,
        "makes the RoIAlign CPU kernels use one instruction set (tests, benchmarks)");
}
