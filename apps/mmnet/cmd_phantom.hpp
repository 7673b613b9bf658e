// apps/mmnet/cmd_phantom.hpp: `mmnet phantom`: a synthetic multi-modal head-phantom data set in the MSD layout
// (data/phantom.hpp, data/dataset.hpp): imagesTr + labelsTr (training), imagesTs + labelsTs (held-out test).
#pragma once
#include <CLI/CLI.hpp>

#include <cstdio>
#include <string>

#include <mmnet/data/dataset.hpp>
#include <mmnet/data/phantom.hpp>

#include "cli_common.hpp"
#include "pipeline.hpp"

namespace mmnet_cli {

struct PhantomArgs {
  std::string out, shape = "24x96x96";
  int cases = 12, test_cases = 4;
  unsigned long long seed = 0;
};

inline CLI::App* add_phantom_command(CLI::App& app, PhantomArgs& a) {
  auto* c = app.add_subcommand("phantom", "Write a synthetic multi-modal head-phantom data set (MSD layout, T1/T2/CET1, lesion label)");
  c->option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);  // a later option wins
  c->add_option("--out", a.out, "Data set directory (dataset.json, imagesTr, labelsTr, imagesTs, labelsTs)")->required();
  c->add_option("--cases", a.cases, "Training cases (phantom_001 ...)")->capture_default_str();
  c->add_option("--test-cases", a.test_cases, "Held-out test cases with labelsTs (phantom_101 ...)")->capture_default_str();
  c->add_option("--seed", a.seed, "Seed; case k uses derive_seed(seed, k)")->capture_default_str();
  c->add_option("--shape", a.shape, "Voxels DxHxW (spacing 4 x 1 x 1 mm)")->capture_default_str();
  return c;
}

inline int run_phantom(const PhantomArgs& a) {
  if (a.cases < 1) throw cli_error("--cases: expected >= 1, got " + std::to_string(a.cases));
  if (a.test_cases < 0) throw cli_error("--test-cases: expected >= 0, got " + std::to_string(a.test_cases));
  const auto s = parse_shape(a.shape);
  for (int d = 0; d < 3; ++d)
    if (s[d] < 8) throw cli_error("--shape: each size must be >= 8, got '" + a.shape + "'");
  std::error_code ec;
  if (fs::exists(join_path(a.out, "dataset.json"), ec))
    throw cli_error(a.out + ": already holds a data set (dataset.json); remove it or choose another --out");
  OutputGuard guard;
  guard.make_dir(a.out);
  const auto opt = mmnet::data::PhantomOptions().shape({s[0], s[1], s[2]});
  mmnet::data::write_phantom_dataset(a.out, a.cases, a.test_cases, a.seed, opt);
  guard.commit();
  std::printf("phantom: %d training + %d test cases of %lld x %lld x %lld voxels (4 x 1 x 1 mm), seed %llu -> %s\n",
              a.cases, a.test_cases, static_cast<long long>(s[0]), static_cast<long long>(s[1]),
              static_cast<long long>(s[2]), a.seed, a.out.c_str());
  return 0;
}

}  // namespace mmnet_cli
