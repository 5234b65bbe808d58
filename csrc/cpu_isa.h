// The instruction set the CPU kernels of every op run with. Each op compiles its kernels once per
// CpuIsa and dispatches on cpu_isa() at each call; the choice is one process-wide setting, so that
// tests and benchmarks switch all ops at once.
//
// Declarations only: ms_deform_attn's per-ISA translation units include this before enabling AVX2
// or AVX-512 for the rest of the file, and an inline function defined here would be compiled there
// too, with the linker free to keep the AVX-512 copy for every caller.
#pragma once

#include <string>
#include <vector>

// The AVX2 and AVX-512 variants rely on GCC's target attributes and `#pragma GCC target`; other
// compilers and architectures get the portable variant only.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define SAM_DETR_CPU_X86_VARIANTS 1
#else
#define SAM_DETR_CPU_X86_VARIANTS 0
#endif

namespace sam_detr {

// Ordered narrowest first. kDefault is the compiler's baseline for the target (SSE2 on x86-64).
// kAvx2 may use FMA and kAvx512 AVX-512 F/VL/BW/DQ, the features ATen's AVX2 / AVX512 need too.
enum class CpuIsa { kDefault, kAvx2, kAvx512 };

// The selected instruction set. Until set_cpu_isa() it is the widest one that this CPU runs and that
// ATen uses for its own kernels (at::get_cpu_capability()), so ATEN_CPU_CAPABILITY=default|avx2
// lowers it as it lowers PyTorch's kernels.
CpuIsa cpu_isa();

// Lower-case name of an instruction set: "default", "avx2" or "avx512", as in ATEN_CPU_CAPABILITY.
std::string cpu_isa_name(CpuIsa isa);

// Names of the instruction sets compiled in and supported by this CPU, narrowest first; any of them
// can be selected, whatever ATen's capability.
std::vector<std::string> supported_cpu_isas();

// Selects `name`, one of supported_cpu_isas(), for every later op call, and returns the name of the
// one selected before. For tests and benchmarks: an op reads cpu_isa() once per call, so a call
// already running finishes with the instruction set it started with.
std::string set_cpu_isa(const std::string& name);

}  // namespace sam_detr
