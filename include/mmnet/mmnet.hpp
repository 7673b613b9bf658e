// mmnet/mmnet.hpp: the whole library. Components can also be included one by one.
#pragma once

#include "core/backend.hpp"
#include "core/backends.hpp"
#include "core/config.hpp"
#include "core/error.hpp"
#include "core/module.hpp"
#include "core/ops.hpp"
#include "core/parallel.hpp"
#include "core/random.hpp"
#include "core/shape.hpp"
#include "core/state_dict.hpp"
#include "core/tensor.hpp"
#include "core/xtensor.hpp"

#include "init/init.hpp"

#include "layers/activation.hpp"

#include "io/hdf5.hpp"
#include "io/weights.hpp"
