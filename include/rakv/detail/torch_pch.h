// Precompiled header for every translation unit of librakv and its tests: LibTorch's
// frontend costs ~20 s per file to parse on a 2-core machine, once here instead.
#pragma once
#include <torch/torch.h>
