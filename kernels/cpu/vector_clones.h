// Runtime ISA dispatch for the hot loops of the CPU kernels. The kernels are compiled for the
// x86-64 baseline (SSE2, no FMA) so that librakv runs anywhere; the functions marked with
// RAKV_VECTOR_CLONES get a second AVX2+FMA (x86-64-v3) clone that glibc's ifunc resolver picks
// at load time where the CPU has it (2x the vector width, fused multiply-add).
//
// Mark only leaf functions that are called from inside OpenMP regions: GCC outlines a parallel
// region into its own function before cloning, so a marked function that *contains* the region
// would run its loops at the baseline ISA. Callees meant to share the clone's ISA must inline.
#pragma once

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define RAKV_VECTOR_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define RAKV_VECTOR_CLONES
#endif

#define RAKV_ALWAYS_INLINE inline __attribute__((always_inline))

// Hand-written AVX2 versions of a function, chosen at load time by GCC's function
// multiversioning: define `RAKV_BASELINE_VERSION f(...)` and, under
// `#if RAKV_AVX2_VERSIONS`, `RAKV_AVX2_VERSION f(...)` with the same signature.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define RAKV_AVX2_VERSIONS 1
#define RAKV_BASELINE_VERSION __attribute__((target("default")))
#define RAKV_AVX2_VERSION __attribute__((target("avx2,bmi,popcnt")))
#else
#define RAKV_AVX2_VERSIONS 0
#define RAKV_BASELINE_VERSION
#endif
