// Python bindings of sam_detr._C. Each op lives in its own folder: <op>/<op>.h declares the
// device-dispatching entry points, <op>/<op>_cpu.cpp and <op>/<op>_cuda.cu implement them.
#include <torch/extension.h>

#include "ms_deform_attn/ms_deform_attn.h"

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
  m.def("ms_deform_attn_forward", &sam_detr::ms_deform_attn_forward,
        "multi-scale deformable attention forward (see ms_deform_attn/ms_deform_attn.h)");
  m.def("ms_deform_attn_backward", &sam_detr::ms_deform_attn_backward,
        "multi-scale deformable attention backward: [grad_value, grad_sampling_loc, grad_attn_weight]");
}
