// mmnet/mmnet.hpp: the whole library. Components can also be included one by one.
#pragma once

#include "core/backend.hpp"
#include "core/backends.hpp"
#include "core/config.hpp"
#include "core/error.hpp"
#include "core/expanding_array.hpp"
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
#include "layers/avgpool3d.hpp"
#include "layers/batchnorm3d.hpp"
#include "layers/broadcast.hpp"
#include "layers/channel_reduce.hpp"
#include "layers/concat.hpp"
#include "layers/conv3d.hpp"
#include "layers/conv_transpose3d.hpp"
#include "layers/dropout3d.hpp"
#include "layers/global_pool.hpp"
#include "layers/group_norm.hpp"
#include "layers/instance_norm3d.hpp"
#include "layers/linear.hpp"
#include "layers/maxpool3d.hpp"
#include "layers/softmax.hpp"
#include "layers/ws_conv3d.hpp"

#include "losses/bce_with_logits.hpp"
#include "losses/reduction.hpp"
#include "losses/soft_dice.hpp"

#include "optim/adam.hpp"
#include "optim/optimizer.hpp"
#include "optim/sgd.hpp"

#include "models/tiny_net.hpp"

#include "io/hdf5.hpp"
#include "io/weights.hpp"
