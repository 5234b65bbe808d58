#include "cpu_isa.h"

#include <atomic>

#include <ATen/Version.h>
#include <c10/util/Exception.h>
#include <c10/util/StringUtil.h>

namespace sam_detr {

namespace {

constexpr CpuIsa kAllIsas[] = {CpuIsa::kDefault, CpuIsa::kAvx2, CpuIsa::kAvx512};
constexpr const char* kNames[] = {"default", "avx2", "avx512"};  // indexed by CpuIsa

// Whether this CPU (and OS, which must save the wider registers) runs every feature that the
// variant's kernels are compiled with.
bool cpu_runs(CpuIsa isa) {
  if (isa == CpuIsa::kDefault) return true;
#if SAM_DETR_CPU_X86_VARIANTS
  __builtin_cpu_init();
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  if (isa == CpuIsa::kAvx2) return avx2;
  return avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
      __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq");
#else
  return false;
#endif
}

// The widest variant ATen allows for its own kernels; on other architectures (VSX, SVE, ...) only
// the portable variant exists anyway.
CpuIsa aten_cpu_isa() {
  const std::string capability = at::get_cpu_capability();
  if (capability == "AVX512") return CpuIsa::kAvx512;
  if (capability == "AVX2") return CpuIsa::kAvx2;
  return CpuIsa::kDefault;
}

std::atomic<CpuIsa>& selected() {
  static std::atomic<CpuIsa> isa{[] {
    const CpuIsa allowed = aten_cpu_isa();
    CpuIsa best = CpuIsa::kDefault;
    for (CpuIsa candidate : kAllIsas) {
      if (candidate <= allowed && cpu_runs(candidate)) best = candidate;
    }
    return best;
  }()};
  return isa;
}

}  // namespace

CpuIsa cpu_isa() {
  return selected().load(std::memory_order_relaxed);
}

std::string cpu_isa_name(CpuIsa isa) {
  return kNames[static_cast<int>(isa)];
}

std::vector<std::string> supported_cpu_isas() {
  std::vector<std::string> names;
  for (CpuIsa isa : kAllIsas) {
    if (cpu_runs(isa)) names.push_back(cpu_isa_name(isa));
  }
  return names;
}

std::string set_cpu_isa(const std::string& name) {
  for (CpuIsa isa : kAllIsas) {
    if (name != cpu_isa_name(isa)) continue;
    TORCH_CHECK(cpu_runs(isa), "set_cpu_isa: the ", name, " CPU kernels cannot run here; supported: ",
                c10::Join(", ", supported_cpu_isas()));
    return cpu_isa_name(selected().exchange(isa));
  }
  TORCH_CHECK(false, "set_cpu_isa: unknown instruction set '", name, "'; supported: ",
              c10::Join(", ", supported_cpu_isas()));
}

}  // namespace sam_detr
