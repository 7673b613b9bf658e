// apps/mmnet/cmd_phantom.hpp: `mmnet phantom`: a synthetic multi-modal head-phantom data set in the MSD layout
// (data/phantom.hpp, data/dataset.hpp): imagesTr + labelsTr (training), imagesTs + labelsTs (held-out test).
// --task mmfnet-like (default): T1 / T2 / CET1 head phantoms, 4 x 1 x 1 mm, label 1 lesion; --task brats-like:
// skull-stripped T1 / T1ce / T2 / FLAIR brain-tumour phantoms, 1 mm isotropic (PhantomOptions::brats()), labels
// 1 edema, 2 non-enhancing, 3 enhancing (nnU-Net's BraTS convention); --task npc-like: single-modality T1
// head-and-neck phantoms with a small nasopharyngeal tumour for CSCN, 3 x 1 x 1 mm (PhantomOptions::npc()),
// label 1 tumour; --task barriers: CT / T1c / T2 brain-barrier phantoms for HMRNet, 1.2 mm isotropic
// (PhantomOptions::barriers()), labels 1 cerebellum, 2 falx, 3 sinuses, 4 tentorium, 5 ventricles.
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
  std::string out, shape, task = "mmfnet-like";  // shape empty: the task's default
  int cases = 12, test_cases = 4;
  unsigned long long seed = 0;
};

inline CLI::App* add_phantom_command(CLI::App& app, PhantomArgs& a) {
  auto* c = app.add_subcommand("phantom", "Write a synthetic head-phantom data set (MSD layout; --task mmfnet-like, brats-like, npc-like or barriers)");
  c->option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);  // a later option wins
  c->add_option("--out", a.out, "Data set directory (dataset.json, imagesTr, labelsTr, imagesTs, labelsTs)")->required();
  c->add_option("--cases", a.cases, "Training cases (phantom_001 ...)")->capture_default_str();
  c->add_option("--test-cases", a.test_cases, "Held-out test cases with labelsTs (phantom_101 ...)")->capture_default_str();
  c->add_option("--seed", a.seed, "Seed; case k uses derive_seed(seed, k)")->capture_default_str();
  c->add_option("--task", a.task, "mmfnet-like (T1/T2/CET1, lesion), brats-like (T1/T1ce/T2/FLAIR, edema / non-enhancing / "
                                  "enhancing), npc-like (T1, small nasopharyngeal tumour, for CSCN) or barriers (CT/T1c/T2, "
                                  "cerebellum / falx / sinuses / tentorium / ventricles, for HMRNet)")
      ->capture_default_str()
      ->check(CLI::IsMember({"mmfnet-like", "brats-like", "npc-like", "barriers"}));
  c->add_option("--shape", a.shape, "Voxels DxHxW (default 24x96x96 of 4 x 1 x 1 mm for mmfnet-like, 48x48x48 of 1 mm for "
                                    "brats-like, 24x64x64 of 3 x 1 x 1 mm for npc-like, 48x56x48 of 1.2 mm for barriers)");
  return c;
}

inline int run_phantom(const PhantomArgs& a) {
  if (a.cases < 1) throw cli_error("--cases: expected >= 1, got " + std::to_string(a.cases));
  if (a.test_cases < 0) throw cli_error("--test-cases: expected >= 0, got " + std::to_string(a.test_cases));
  const bool brats = a.task == "brats-like", npc = a.task == "npc-like", barriers = a.task == "barriers";
  if (!brats && !npc && !barriers && a.task != "mmfnet-like")
    throw cli_error("--task: expected mmfnet-like, brats-like, npc-like or barriers, got '" + a.task + "'");
  const std::string shape = !a.shape.empty() ? a.shape : brats ? "48x48x48" : npc ? "24x64x64" : barriers ? "48x56x48" : "24x96x96";
  const auto s = parse_shape(shape);
  for (int d = 0; d < 3; ++d)
    if (s[d] < 8) throw cli_error("--shape: each size must be >= 8, got '" + a.shape + "'");
  std::error_code ec;
  if (fs::exists(join_path(a.out, "dataset.json"), ec))
    throw cli_error(a.out + ": already holds a data set (dataset.json); remove it or choose another --out");
  OutputGuard guard;
  guard.make_dir(a.out);
  const auto opt = (brats ? mmnet::data::PhantomOptions::brats()
                    : npc ? mmnet::data::PhantomOptions::npc()
                    : barriers ? mmnet::data::PhantomOptions::barriers()
                          : mmnet::data::PhantomOptions()).shape({s[0], s[1], s[2]});
  const auto sp = opt.spacing();
  mmnet::data::write_phantom_dataset(a.out, a.cases, a.test_cases, a.seed, opt);
  guard.commit();
  std::printf("phantom: %d training + %d test cases of %lld x %lld x %lld voxels (%g x %g x %g mm), seed %llu -> %s\n",
              a.cases, a.test_cases, static_cast<long long>(s[0]), static_cast<long long>(s[1]),
              static_cast<long long>(s[2]), sp[0], sp[1], sp[2], a.seed, a.out.c_str());
  if (brats) std::printf("phantom: task brats-like: modalities T1 T1ce T2 FLAIR, labels 1 edema, 2 non-enhancing, 3 enhancing\n");
  if (npc) std::printf("phantom: task npc-like: modality T1, label 1 tumour\n");
  if (barriers)
    std::printf("phantom: task barriers: modalities CT T1c T2, labels 1 cerebellum, 2 falx, 3 sinuses, 4 tentorium, "
                "5 ventricles\n");
  return 0;
}

}  // namespace mmnet_cli
