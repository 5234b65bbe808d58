// Python bindings of sam_detr._C. Each op lives in its own folder: <op>/<op>.h declares the
// device-dispatching entry points, <op>/<op>_cpu.cpp and <op>/<op>_cuda.cu implement them.
#include <torch/extension.h>

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
}
