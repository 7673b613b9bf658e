// mmnet/data/phantom.hpp: seeded synthetic multi-modal head phantoms with a lesion label, the test data of the
// pipeline (no public data set matches MMFNet's private T1 / T2 / CET1 nasopharynx scans; there is no PyTorch
// equivalent, the closest are TorchIO's RandomLabelsToImage / RandomBiasField / RandomNoise).
//
// Model (PhantomTask::mmfnet_like), all in millimetres on the (D, H, W) = (z, y, x) grid, centred in the volume:
//   * head: an ellipsoid (semi-axes 0.42 / 0.44 / 0.38 of the field of view along z / y / x, each and the centre
//     jittered by up to head_jitter) with nested compartments by normalised radius r: skin (0.92 < r <= 1),
//     skull (0.84 < r <= 0.92), a CSF layer (0.80 < r <= 0.84), brain (r <= 0.80); two CSF-filled "ventricles"
//     (ellipsoids mirrored about the head's mid-sagittal plane); `distractors` small elongated enhancing
//     "vessels" inside the brain.
//   * lesion: the union of 1..lesion_lobes randomly rotated ellipsoids (main radius uniform in lesion_radius mm,
//     lobes offset from the main one), its surface deformed by smooth low-frequency cosine noise of relative
//     amplitude lesion_deformation, centred at a random point inside the brain and clipped to the brain; its
//     outer shell (the last lesion_rim of the normalised radius) is the enhancing rim.
//   * tissue intensities (T1, T2, CET1), see phantom_tissue_intensity():
//       air 0/0/0, skin .85/.55/.85, skull .12/.08/.12, brain .60/.45/.60, CSF .18/.95/.18, vessel .60/.45/1.0,
//       lesion core .55/.85/.72, lesion rim .55/.80/1.0.
//     So fusion matters: in T1 the lesion is barely darker than brain (contrast / noise = 1.7 at the default
//     SNR); in T2 it is bright but the CSF (ventricles, outer layer) is brighter; in CET1 the rim enhances but so do the vessels and
//     the skin; "bright in T2 and in CET1" singles it out.
//   * a smooth anatomical texture (shared by all modalities, relative amplitude `texture`), then per modality a
//     multiplicative bias field b = exp(bias_strength * sum_j a_j cos(2 pi f_j . u + phi_j)) with sum |a_j| = 1,
//     u the position in fields of view and |f_j| <= 1 cycle per field of view along each axis (so
//     |log b| <= bias_strength and one voxel step changes log b by at most 2 pi bias_strength / n_axis), then
//     noise of standard deviation sigma = brain intensity / snr: Rician (magnitude of a complex signal, as MR
//     magnitude images; air is Rayleigh-distributed, mean 1.25 sigma), Gaussian, or none.
// Deterministic: one Generator(seed) draws every parameter and then the noise voxel by voxel in a fixed order
// (single-threaded), so a seed gives bit-identical volumes on a platform (libm's cos / exp may differ in the last
// place between platforms). A default phantom (24 x 96 x 96 voxels of 4 x 1 x 1 mm) takes ~0.1 s.
//
// Model (PhantomTask::brats_like, preset PhantomOptions::brats(): 48^3 voxels of 1 mm), BraTS / MSD Task01 after
// nnU-Net's label conversion (MAML spec §4.2):
//   * skull-stripped brain: an ellipsoid (0.40 / 0.44 / 0.38 of the field of view, jittered); outside it every
//     modality is exactly 0 (no noise), so nnU-Net's non-zero mask is the brain. Inside: white matter, a grey
//     matter cortex with a folded inner surface, a thin outer CSF layer, two ventricles, thin T1ce-enhancing vessels.
//   * tumour: a core of 1..lesion_lobes deformed ellipsoids (radius lesion_radius mm) whose outer shell (lesion_rim
//     x (1 +- 0.5), varying smoothly) is label 3 enhancing and whose inside is label 2 non-enhancing / necrosis;
//     label 1 edema = the same lobes scaled by edema_scale with their own deformation, outside the core and not in
//     CSF. Regions WT {1,2,3} > TC {2,3} > ET {3}.
//   * intensities (T1, T1ce, T2, FLAIR), see brats_tissue_intensity(): WM .80/.76/.35/.45, GM .60/.58/.50/.58,
//     CSF .20/.22/1.0/.12, vessel .70/1.15/.40/.45, edema .66/.64/.72/.82, necrosis .48/.30/.90/.74, enhancing
//     .68/1.30/.68/.80: FLAIR and T2 show the whole tumour bright (T2: CSF brighter), T1ce the enhancing part very
//     bright and the necrosis dark, T1 the tumour only faintly.
//   * texture, bias field and noise as above, only inside the brain; sigma = white matter intensity / snr.
//
// Model (PhantomTask::npc_like, preset PhantomOptions::npc(): 24 x 64 x 64 voxels of 3 x 1 x 1 mm, i.e. thick
// axial slices like CSCN's 0.6 x 0.6 x 3.0 mm THRIVE scans; PhantomOptions::npc_isotropic(): the same 72 x 64 x 64
// mm field of view at 1 mm, the grid CSCN's pipeline resamples to, spec cascaded-fcn §4.1), ONE modality "T1",
// labels 0 background, 1 tumour (the nasopharyngeal carcinoma GTV of Guo et al. 2021):
//   * head and neck: an ellipsoid (0.46 / 0.44 / 0.42 of the field of view, jittered) of muscle with a bright
//     subcutaneous-fat shell (normalised radius > 0.88); around a nasopharynx centre slightly anterior of the
//     head centre: the airway (air, an ellipsoid elongated along z, 3.5-5 x 6-8 mm in-plane), a 2 mm mucosa
//     shell around it, adenoid lymphoid tissue on its posterior-superior wall, two parapharyngeal fat pads
//     lateral to it, the clivus (dark bone, posterior-superior) and a vertebral body (posterior-inferior);
//     `distractors` retropharyngeal lymph nodes (small ellipsoids, tumour-like intensity, NOT labelled).
//   * tumour: 1..lesion_lobes deformed ellipsoids as the mmfnet_like lesion (main radius lesion_radius mm,
//     default 6..9 mm: about 1-3 cm^3), centred on the posterior or lateral airway wall (the fossa of
//     Rosenmüller, where NPC arises); it replaces muscle, mucosa, lymphoid tissue, fat and airway (it may bulge
//     into the lumen) but not bone or the fat shell; a smooth internal heterogeneity of +-8%.
//   * T1 intensities, see npc_tissue_intensity(): air 0, muscle .45, fat .95, bone .12, vertebra .30, mucosa .60,
//     lymphoid .62, lymph node .66, tumour .68. So the tumour is clearly brighter than muscle (6 sigma at the
//     default SNR 12, sigma = muscle / snr) but overlaps the mucosa, the adenoid and the nodes (0.5-2 sigma,
//     plus texture and bias): no threshold separates it, location and shape must.
//   * texture, bias field and Rician noise as mmfnet_like (noise everywhere, including the air outside).
//
// Model (PhantomTask::barriers, preset PhantomOptions::barriers(): 48 x 56 x 48 voxels of 1.2 mm isotropic, the
// ABCs 2020 grid spacing), THREE co-registered channels [CT, T1c, T2] and the five anatomical barriers of HMRNet
// (spec hmrnet.md §1), labels 1 cerebellum, 2 falx cerebri, 3 sagittal & transverse sinuses, 4 tentorium
// cerebelli, 5 ventricles. Axes: +z superior, +y anterior, x left-right; u = (pos - brain centre) / brain semi-axes:
//   * head: an ellipsoid (0.44 / 0.45 / 0.42 of the field of view, jittered) with skin (0.93 < r), skull
//     (0.85 < r <= 0.93), a CSF / dura layer (0.80 < r <= 0.85) and the brain (r <= 0.80, brain radius rb = r / 0.8).
//   * tentorium (4): the tent surface u_z = h(u_y, u_x) = t0 + 0.45 (1 + u_y)(1 - 0.5 |u_x|) (t0 ~ -0.45, jittered)
//     for u_y <= -0.1, ONE voxel thick along z (the voxel whose z cell holds the surface), inside the brain.
//   * cerebellum (1): an ellipsoid (centre u = (-0.72, -0.55, 0), semi-axes ~ (0.24, 0.36, 0.55)) below the
//     tentorium (u_z < h - 0.06) and inside rb <= 0.97: a posterior-inferior blob.
//   * falx (2): the mid-sagittal sheet, ONE voxel thick along x (the voxel whose x cell holds the jittered midline),
//     above u_z = 0.15 + 0.2 u_y^2 anteriorly (free edge over the ventricles) and down to the tentorium posteriorly
//     (u_y < -0.2); the voxels either side of it are CSF (the interhemispheric fissure).
//   * sinuses (3): the superior sagittal sinus, the midline (|x - midline| <= 1.5 voxels) part of the outer shell
//     1.0 < rb <= 1.06 (about one voxel radially) with u_z > t0 + 0.6 max(u_y, 0): the upper arc from the front
//     down to the confluence at the back; the transverse sinuses, the posterior (u_y < 0.1) part of the same shell within one
//     voxel (in z) of the tentorium's attachment height t0: a ring along the back of the skull.
//   * ventricles (5): two ellipsoids mirrored about the midline (centre u = (0.08, 0, +-0.2), semi-axes ~ (0.18,
//     0.38, 0.10), jittered).
//   * intensities [CT, T1c, T2], see barriers_tissue_intensity(): air 0/0/0, skin .38/.85/.55, skull 1.0/.12/.08,
//     brain .40/.60/.45, CSF .33/.18/.95, dura (falx, tentorium) .48/.80/.20, sinus blood .45/1.05/.30,
//     cerebellum .42/.55/.50: CT shows the bone bright, T1c the sinuses (and mildly the dura), T2 the CSF and
//     ventricles; the thin dura sheets are a dark line between bright CSF in T2.
//   * texture as above; the bias field only on the MR channels (T1c, T2; CT has no coil bias: its bias is 1);
//     noise (o.noise()) everywhere in every channel, sigma = brain intensity of the channel / snr.
// Thin structures (falx, tentorium, sinuses) are 1-2 voxels thick, as in the ABCs data at 1.2 mm.
//
// Options (chained setters as libtorch): PhantomOptions().shape({16, 64, 64}).spacing({4, 1, 1}).snr(10).
// New tasks (barrier structures, ...) add PhantomTask values and a case to the switches in phantom_task_name(),
// phantom_modalities(), phantom_labels() and make_phantom().
#pragma once
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "../core/error.hpp"
#include "../core/random.hpp"
#include "volume.hpp"

namespace mmnet::data {

enum class PhantomTask {
  mmfnet_like,  // 3 modalities (T1, T2, CET1), labels 0 background, 1 lesion
  brats_like,   // 4 modalities (T1, T1ce, T2, FLAIR), skull-stripped, labels 0 background, 1 edema,
                // 2 non-enhancing / necrosis, 3 enhancing (nnU-Net's BraTS convention, spec §4.2)
  npc_like,     // 1 modality (T1), head and neck at the nasopharynx, labels 0 background, 1 tumour (CSCN)
  barriers,     // 3 modalities (CT, T1c, T2), labels 0 background, 1 cerebellum, 2 falx cerebri, 3 sagittal &
                // transverse sinuses, 4 tentorium cerebelli, 5 ventricles (ABCs 2020 task 1, HMRNet)
};
enum class PhantomNoise { none, gaussian, rician };

// Tissue classes of the ground-truth tissue map (Phantom::tissues).
// air .. lesion_rim: mmfnet_like; air (outside the brain), csf, vessel and white_matter .. enhancing: brats_like;
// air (outside the head) and muscle .. tumour: npc_like (its airway lumen is `airway`, not `air`); air, skin,
// skull, brain, csf, dura, sinus_blood, cerebellum: barriers.
enum class PhantomTissue : std::uint8_t {
  air = 0, skin, skull, brain, csf, vessel, lesion_core, lesion_rim,
  white_matter, grey_matter, edema, necrosis, enhancing,
  muscle, fat, bone, vertebra, airway, mucosa, lymphoid, lymph_node, tumour,
  dura, sinus_blood, cerebellum, count
};

inline const char* phantom_task_name(PhantomTask t) {
  switch (t) {
    case PhantomTask::mmfnet_like: return "mmfnet_like";
    case PhantomTask::brats_like: return "brats_like";
    case PhantomTask::npc_like: return "npc_like";
    case PhantomTask::barriers: return "barriers";
  }
  return "?";
}
// The modality names of a task, in channel order.
inline std::vector<std::string> phantom_modalities(PhantomTask t) {
  switch (t) {
    case PhantomTask::mmfnet_like: return {"T1", "T2", "CET1"};
    case PhantomTask::brats_like: return {"T1", "T1ce", "T2", "FLAIR"};  // BraTS / MSD Task01 channel order
    case PhantomTask::npc_like: return {"T1"};  // CSCN: one T1-weighted (THRIVE) channel
    case PhantomTask::barriers: return {"CT", "T1c", "T2"};  // HMRNet's channel order [C]
  }
  fail<value_error>("mmnet::data::phantom_modalities", "task", "a PhantomTask", static_cast<int>(t));
}
// The label names of a task, index = label value.
inline std::vector<std::string> phantom_labels(PhantomTask t) {
  switch (t) {
    case PhantomTask::mmfnet_like: return {"background", "lesion"};
    case PhantomTask::brats_like: return {"background", "edema", "non-enhancing", "enhancing"};
    case PhantomTask::npc_like: return {"background", "tumour"};
    case PhantomTask::barriers: return {"background", "cerebellum", "falx", "sinuses", "tentorium", "ventricles"};
  }
  fail<value_error>("mmnet::data::phantom_labels", "task", "a PhantomTask", static_cast<int>(t));
}
// The noise-free, bias-free intensity of a tissue in a modality of the mmfnet_like task (see the top of the file).
inline double phantom_tissue_intensity(PhantomTissue tissue, index_t modality) {
  if (static_cast<int>(tissue) > static_cast<int>(PhantomTissue::lesion_rim) || modality < 0 || modality > 2)
    fail<value_error>("mmnet::data::phantom_tissue_intensity", "tissue / modality of the mmfnet_like task",
                      "a tissue air .. lesion_rim and a modality 0..2",
                      std::to_string(static_cast<int>(tissue)) + " / " + std::to_string(modality));
  static constexpr double table[8][3] = {
      {0.00, 0.00, 0.00},  // air
      {0.85, 0.55, 0.85},  // skin and subcutaneous fat: bright in T1 and CET1
      {0.12, 0.08, 0.12},  // skull
      {0.60, 0.45, 0.60},  // brain
      {0.18, 0.95, 0.18},  // CSF: the brightest in T2
      {0.60, 0.45, 1.00},  // vessel: enhances in CET1 only
      {0.55, 0.85, 0.72},  // lesion core: slightly dark in T1, bright in T2, mildly enhancing
      {0.55, 0.80, 1.00},  // lesion rim: strongly enhancing
  };
  return table[static_cast<int>(tissue)][modality];
}
// The noise-free, bias-free intensity of a tissue in a modality (T1, T1ce, T2, FLAIR) of the brats_like task,
// relative to white matter in T1 ~ 0.8 (see the top of the file). Tissues the task does not use give 0.
inline double brats_tissue_intensity(PhantomTissue tissue, index_t modality) {
  if (modality < 0 || modality > 3)
    fail<value_error>("mmnet::data::brats_tissue_intensity", "modality", "0..3 (T1, T1ce, T2, FLAIR)", modality);
  //                      T1    T1ce  T2    FLAIR
  static constexpr double csf[4] = {0.20, 0.22, 1.00, 0.12};  // dark in T1, the brightest in T2, suppressed in FLAIR
  static constexpr double vessel[4] = {0.70, 1.15, 0.40, 0.45};  // enhances in T1ce: an ET distractor
  static constexpr double wm[4] = {0.80, 0.76, 0.35, 0.45};
  static constexpr double gm[4] = {0.60, 0.58, 0.50, 0.58};
  static constexpr double edema[4] = {0.66, 0.64, 0.72, 0.82};      // FLAIR / T2 bright, T1 faintly dark
  static constexpr double necrosis[4] = {0.48, 0.30, 0.90, 0.74};   // T1ce dark inside the rim, T2 bright
  static constexpr double enhancing[4] = {0.68, 1.30, 0.68, 0.80};  // T1ce very bright
  switch (tissue) {
    case PhantomTissue::csf: return csf[modality];
    case PhantomTissue::vessel: return vessel[modality];
    case PhantomTissue::white_matter: return wm[modality];
    case PhantomTissue::grey_matter: return gm[modality];
    case PhantomTissue::edema: return edema[modality];
    case PhantomTissue::necrosis: return necrosis[modality];
    case PhantomTissue::enhancing: return enhancing[modality];
    default: return 0.0;
  }
}

// The noise-free, bias-free T1 intensity of a tissue of the npc_like task (see the top of the file); tissues the
// task does not use give 0.
inline double npc_tissue_intensity(PhantomTissue tissue) {
  switch (tissue) {
    case PhantomTissue::muscle: return 0.45;
    case PhantomTissue::fat: return 0.95;        // subcutaneous and parapharyngeal fat: the brightest in T1
    case PhantomTissue::bone: return 0.12;       // clivus (cortical bone)
    case PhantomTissue::vertebra: return 0.30;
    case PhantomTissue::mucosa: return 0.60;     // mildly bright, like the tumour
    case PhantomTissue::lymphoid: return 0.62;   // adenoid
    case PhantomTissue::lymph_node: return 0.66; // retropharyngeal nodes: tumour-like, not labelled
    case PhantomTissue::tumour: return 0.68;
    default: return 0.0;                         // air, airway
  }
}

// The noise-free, bias-free intensity of a tissue in a modality (CT, T1c, T2) of the barriers task (see the top of
// the file); tissues the task does not use give 0.
inline double barriers_tissue_intensity(PhantomTissue tissue, index_t modality) {
  if (modality < 0 || modality > 2)
    fail<value_error>("mmnet::data::barriers_tissue_intensity", "modality", "0..2 (CT, T1c, T2)", modality);
  //                                  CT    T1c   T2
  static constexpr double skin[3] = {0.38, 0.85, 0.55};
  static constexpr double skull[3] = {1.00, 0.12, 0.08};     // CT: bone is the brightest
  static constexpr double brain[3] = {0.40, 0.60, 0.45};
  static constexpr double csf[3] = {0.33, 0.18, 0.95};       // T2: CSF and ventricles the brightest
  static constexpr double dura[3] = {0.48, 0.80, 0.20};      // falx, tentorium: dark line in T2, enhancing in T1c
  static constexpr double sinus[3] = {0.45, 1.05, 0.30};     // T1c: venous blood the brightest
  static constexpr double cerebellum[3] = {0.42, 0.55, 0.50};
  switch (tissue) {
    case PhantomTissue::skin: return skin[modality];
    case PhantomTissue::skull: return skull[modality];
    case PhantomTissue::brain: return brain[modality];
    case PhantomTissue::csf: return csf[modality];
    case PhantomTissue::dura: return dura[modality];
    case PhantomTissue::sinus_blood: return sinus[modality];
    case PhantomTissue::cerebellum: return cerebellum[modality];
    default: return 0.0;
  }
}

struct PhantomOptions {
  PhantomOptions() = default;
  // The brats_like task at its defaults for a fast CPU run: 48 x 48 x 48 voxels of 1 mm (BraTS is 1 mm
  // isotropic), tumour core radius 5..8 mm, enhancing rim 0.35, 2 enhancing vessel distractors, bias up to
  // +-25%, SNR 12 (so no single threshold segments the tumour perfectly); every other option as the defaults.
  static PhantomOptions brats() {
    return PhantomOptions().task(PhantomTask::brats_like).shape({48, 48, 48}).spacing({1.0, 1.0, 1.0})
        .lesion_radius(5.0, 8.0).lesion_rim(0.35).distractors(2).bias_strength(0.25).snr(12);
  }

  // The npc_like task (CSCN's nasopharyngeal carcinoma, see the top of the file) for a fast CPU run: 24 x 64 x 64
  // voxels of (3, 1, 1) mm, anisotropic with thick axial slices like the paper's 0.6 x 0.6 x 3.0 mm scans (CSCN's
  // pipeline resamples to 1 mm, spec §4.1); tumour main radius 6..9 mm with up to 3 lobes, deformation 0.3, 2
  // lymph-node distractors, bias up to +-20%, SNR 12; every other option as the defaults.
  static PhantomOptions npc() {
    return PhantomOptions().task(PhantomTask::npc_like).shape({24, 64, 64}).spacing({3.0, 1.0, 1.0})
        .lesion_radius(6.0, 9.0).lesion_lobes(3).lesion_deformation(0.3).distractors(2).bias_strength(0.2).snr(12);
  }
  // npc() on an isotropic 1 mm grid with the same field of view (72 x 64 x 64 mm): 72 x 64 x 64 voxels.
  static PhantomOptions npc_isotropic() { return npc().shape({72, 64, 64}).spacing({1.0, 1.0, 1.0}); }

  // The barriers task (HMRNet's five brain structures, see the top of the file) for a fast CPU run: 48 x 56 x 48
  // voxels of 1.2 mm (the ABCs spacing; every axis a multiple of 8), bias up to +-20% on T1c / T2, SNR 20; the
  // lesion and distractor options are unused.
  static PhantomOptions barriers() {
    return PhantomOptions().task(PhantomTask::barriers).shape({48, 56, 48}).spacing({1.2, 1.2, 1.2})
        .bias_strength(0.2).snr(20);
  }

  // What to simulate (modalities, structures, labels).
  PhantomOptions& task(PhantomTask v) { task_ = v; return *this; }
  // Voxels along (D, H, W); default 24 x 96 x 96 (MMFNet's 16 x 256 x 256 crops scaled down).
  PhantomOptions& shape(std::array<index_t, 3> v) { shape_ = v; return *this; }
  // Voxel size in mm along (D, H, W); default (4, 1, 1): anisotropic like MMFNet's (3.5-5.5, 0.5, 0.5) mm.
  PhantomOptions& spacing(Spacing v) { spacing_ = v; return *this; }
  // Range [lo, hi] of the main lesion lobe's radius in mm; default [6, 14].
  PhantomOptions& lesion_radius(double lo, double hi) { lesion_radius_ = {lo, hi}; return *this; }
  // Maximum number of ellipsoids in the lesion (1..n drawn); default 3.
  PhantomOptions& lesion_lobes(int v) { lesion_lobes_ = v; return *this; }
  // Relative amplitude of the smooth surface deformation, in [0, 0.9]; default 0.25.
  PhantomOptions& lesion_deformation(double v) { lesion_deformation_ = v; return *this; }
  // Enhancing rim thickness as a fraction of the normalised lesion radius, in [0, 1]; default 0.3.
  PhantomOptions& lesion_rim(double v) { lesion_rim_ = v; return *this; }
  // brats_like: the edema extends to this multiple of the tumour core's size, range [lo, hi] drawn per case, in
  // [1, 4]; default [1.5, 2.0]. (mmfnet_like ignores it.)
  PhantomOptions& edema_scale(double lo, double hi) { edema_scale_ = {lo, hi}; return *this; }
  // Number of distractors: enhancing vessel-like ellipsoids in the brain (mmfnet_like, brats_like) or
  // tumour-like retropharyngeal lymph nodes (npc_like); default 3.
  PhantomOptions& distractors(int v) { distractors_ = v; return *this; }
  // Relative jitter of the head's semi-axes and centre, in [0, 0.2]; default 0.05.
  PhantomOptions& head_jitter(double v) { head_jitter_ = v; return *this; }
  // Relative amplitude of the smooth anatomical texture, in [0, 0.5]; default 0.04.
  PhantomOptions& texture(double v) { texture_ = v; return *this; }
  // Maximum |log| of the multiplicative bias field, in [0, 2]; default 0.2 (up to +-20%); 0 = no bias.
  PhantomOptions& bias_strength(double v) { bias_strength_ = v; return *this; }
  // Noise model; default Rician.
  PhantomOptions& noise(PhantomNoise v) { noise_ = v; return *this; }
  // Reference tissue intensity / noise standard deviation per modality (> 0): brain (mmfnet_like), white matter
  // (brats_like), muscle (npc_like); default 20.
  PhantomOptions& snr(double v) { snr_ = v; return *this; }

  PhantomTask task() const { return task_; }
  std::array<index_t, 3> shape() const { return shape_; }
  Spacing spacing() const { return spacing_; }
  std::array<double, 2> lesion_radius() const { return lesion_radius_; }
  int lesion_lobes() const { return lesion_lobes_; }
  std::array<double, 2> edema_scale() const { return edema_scale_; }
  double lesion_deformation() const { return lesion_deformation_; }
  double lesion_rim() const { return lesion_rim_; }
  int distractors() const { return distractors_; }
  double head_jitter() const { return head_jitter_; }
  double texture() const { return texture_; }
  double bias_strength() const { return bias_strength_; }
  PhantomNoise noise() const { return noise_; }
  double snr() const { return snr_; }

 private:
  PhantomTask task_ = PhantomTask::mmfnet_like;
  std::array<index_t, 3> shape_{24, 96, 96};
  Spacing spacing_{4.0, 1.0, 1.0};
  std::array<double, 2> lesion_radius_{6.0, 14.0};
  int lesion_lobes_ = 3;
  double lesion_deformation_ = 0.25;
  double lesion_rim_ = 0.3;
  std::array<double, 2> edema_scale_{1.5, 2.0};
  int distractors_ = 3;
  double head_jitter_ = 0.05;
  double texture_ = 0.04;
  double bias_strength_ = 0.2;
  PhantomNoise noise_ = PhantomNoise::rician;
  double snr_ = 20.0;
};

struct Phantom {
  std::string name;                     // "phantom_s<seed>" (write_phantom_dataset renames it phantom_001, ...)
  Volume image;                         // one channel per modality (phantom_modalities(task) order)
  LabelMap label;                       // phantom_labels(task): mmfnet_like 0 / 1 lesion, brats_like 0..3
  LabelMap tissues;                     // ground-truth PhantomTissue per voxel
  Volume bias;                          // the multiplicative bias field per modality (all 1 without bias)
  std::vector<std::string> modalities;  // channel names
  std::vector<std::string> labels;      // label names by value
};

// A seed for item `index` of a collection made from `seed` (splitmix64 of both): independent streams per case.
inline std::uint64_t derive_seed(std::uint64_t seed, std::uint64_t index) {
  auto mix = [](std::uint64_t z) {
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  };
  return mix(seed ^ mix(index + 0x632BE59BD9B4E019ull));
}

namespace detail {

using Vec3 = std::array<double, 3>;  // (z, y, x) in mm
using Mat3 = std::array<Vec3, 3>;

inline double dot3(const Vec3& a, const Vec3& b) { return a[0] * b[0] + a[1] * b[1] + a[2] * b[2]; }

// A uniformly random rotation (from a normalised Gaussian quaternion); rows are the rotated axes.
inline Mat3 random_rotation(Generator& g) {
  double q[4], n = 0;
  do {
    n = 0;
    for (double& v : q) { v = g.normal(); n += v * v; }
  } while (n < 1e-12);
  n = std::sqrt(n);
  const double w = q[0] / n, x = q[1] / n, y = q[2] / n, z = q[3] / n;
  return Mat3{Vec3{1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)},
              Vec3{2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)},
              Vec3{2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)}};
}
inline Vec3 random_direction(Generator& g) {
  Vec3 v;
  double n = 0;
  do {
    n = 0;
    for (double& c : v) { c = g.normal(); n += c * c; }
  } while (n < 1e-12);
  n = std::sqrt(n);
  for (double& c : v) c /= n;
  return v;
}

// An ellipsoid: centre, semi-axes (along the rows of `axes`); norm(p) < 1 inside.
struct Ellipsoid {
  Vec3 centre{0, 0, 0}, semi{1, 1, 1};
  Mat3 axes{Vec3{1, 0, 0}, Vec3{0, 1, 0}, Vec3{0, 0, 1}};
  double norm(const Vec3& p) const {
    const Vec3 d{p[0] - centre[0], p[1] - centre[1], p[2] - centre[2]};
    double s = 0;
    for (int a = 0; a < 3; ++a) {
      const double u = dot3(axes[a], d) / semi[a];
      s += u * u;
    }
    return std::sqrt(s);
  }
  double max_semi() const { return std::max({semi[0], semi[1], semi[2]}); }
};

// The field of view in mm (the origin is its centre).
inline Vec3 field_of_view(const PhantomOptions& o) {
  return {static_cast<double>(o.shape()[0]) * o.spacing()[0], static_cast<double>(o.shape()[1]) * o.spacing()[1],
          static_cast<double>(o.shape()[2]) * o.spacing()[2]};
}

// The head (or skull-stripped brain) of every task: semi-axes frac * fov, each and the centre jittered by
// head_jitter; per axis, the semi-axis draw comes before the centre draw.
inline Ellipsoid jittered_ellipsoid(Generator& g, const Vec3& frac, const Vec3& fov, double jit) {
  Ellipsoid e;
  for (int a = 0; a < 3; ++a) {
    e.semi[a] = frac[a] * fov[a] * (1 + g.uniform(-jit, jit));
    e.centre[a] = fov[a] * g.uniform(-jit, jit) * 0.5;
  }
  return e;
}

// sum_j a_j cos(2 pi f_j . p + phi_j) with sum |a_j| = 1: a smooth field in [-1, 1].
struct CosineField {
  std::vector<Vec3> freq;  // cycles per unit of p
  std::vector<double> amp, phase;
  double operator()(const Vec3& p) const {
    double s = 0;
    for (std::size_t j = 0; j < freq.size(); ++j) s += amp[j] * std::cos(6.283185307179586 * dot3(freq[j], p) + phase[j]);
    return s;
  }
};
// `terms` cosines with frequencies drawn per axis uniformly in [-max_freq[a], max_freq[a]].
inline CosineField random_cosine_field(Generator& g, int terms, const Vec3& max_freq) {
  CosineField f;
  double total = 0;
  for (int j = 0; j < terms; ++j) {
    f.freq.push_back(Vec3{g.uniform(-max_freq[0], max_freq[0]), g.uniform(-max_freq[1], max_freq[1]),
                          g.uniform(-max_freq[2], max_freq[2])});
    f.amp.push_back(g.uniform(0.2, 1.0));
    f.phase.push_back(g.uniform(0.0, 6.283185307179586));
    total += f.amp.back();
  }
  for (double& a : f.amp) a /= total;
  return f;
}

inline void check_phantom_options(const PhantomOptions& o) {
  const char* who = "mmnet::data::make_phantom";
  for (int a = 0; a < 3; ++a) {
    if (o.shape()[a] < 4) fail<value_error>(who, "shape[" + std::to_string(a) + "]", ">= 4 voxels", o.shape()[a]);
    if (!(o.spacing()[a] > 0 && std::isfinite(o.spacing()[a])))
      fail<value_error>(who, "spacing[" + std::to_string(a) + "]", "a finite value > 0 mm", o.spacing()[a]);
  }
  const auto r = o.lesion_radius();
  if (!(r[0] > 0 && r[1] >= r[0] && std::isfinite(r[1])))
    fail<value_error>(who, "lesion_radius", "0 < lo <= hi (mm)", "[" + std::to_string(r[0]) + ", " + std::to_string(r[1]) + "]");
  if (o.lesion_lobes() < 1) fail<value_error>(who, "lesion_lobes", ">= 1", o.lesion_lobes());
  if (!(o.lesion_deformation() >= 0 && o.lesion_deformation() <= 0.9))
    fail<value_error>(who, "lesion_deformation", "a value in [0, 0.9]", o.lesion_deformation());
  if (!(o.lesion_rim() >= 0 && o.lesion_rim() <= 1)) fail<value_error>(who, "lesion_rim", "a value in [0, 1]", o.lesion_rim());
  const auto es = o.edema_scale();
  if (!(es[0] >= 1 && es[1] >= es[0] && es[1] <= 4))
    fail<value_error>(who, "edema_scale", "1 <= lo <= hi <= 4", "[" + std::to_string(es[0]) + ", " + std::to_string(es[1]) + "]");
  if (o.distractors() < 0) fail<value_error>(who, "distractors", ">= 0", o.distractors());
  if (!(o.head_jitter() >= 0 && o.head_jitter() <= 0.2)) fail<value_error>(who, "head_jitter", "a value in [0, 0.2]", o.head_jitter());
  if (!(o.texture() >= 0 && o.texture() <= 0.5)) fail<value_error>(who, "texture", "a value in [0, 0.5]", o.texture());
  if (!(o.bias_strength() >= 0 && o.bias_strength() <= 2))
    fail<value_error>(who, "bias_strength", "a value in [0, 2]", o.bias_strength());
  if (!(o.snr() > 0 && std::isfinite(o.snr()))) fail<value_error>(who, "snr", "a finite value > 0", o.snr());
}

// Adds Gaussian or Rician noise (magnitude of a complex signal with Gaussian noise in both parts) voxel by voxel in
// (modality, z, y, x) order, drawing only for the voxels where noisy(i) holds: sigma(m) per modality.
template <class Sigma, class Noisy>
void add_noise(Volume& image, PhantomNoise kind, Generator& g, Sigma sigma_of, Noisy noisy) {
  if (kind == PhantomNoise::none) return;
  for (index_t m = 0; m < image.channels; ++m) {
    const double sigma = sigma_of(m);
    float* c = image.channel(m);
    for (index_t i = 0; i < image.voxels(); ++i) {
      if (!noisy(i)) continue;
      const double s = c[i];
      if (kind == PhantomNoise::gaussian) {
        c[i] = static_cast<float>(s + sigma * g.normal());
      } else {
        const double re = s + sigma * g.normal(), im = sigma * g.normal();
        c[i] = static_cast<float>(std::sqrt(re * re + im * im));
      }
    }
  }
}

inline Phantom make_mmfnet_like(const PhantomOptions& o, std::uint64_t seed) {
  Generator g(seed);
  const index_t D = o.shape()[0], H = o.shape()[1], W = o.shape()[2];
  const Spacing sp = o.spacing();
  const Vec3 fov = field_of_view(o);  // mm; the origin is its centre
  const double jit = o.head_jitter();

  // Head and its compartments (fractions of the head's normalised radius).
  const Ellipsoid head = jittered_ellipsoid(g, Vec3{0.42, 0.44, 0.38}, fov, jit);
  constexpr double skin_in = 0.92, skull_in = 0.84, brain_out = 0.80;
  Vec3 brain_semi;
  for (int a = 0; a < 3; ++a) brain_semi[a] = head.semi[a] * brain_out;

  // Ventricles: two ellipsoids mirrored about x = head centre, slightly anterior (+y) of the centre.
  Ellipsoid ventricle[2];
  {
    const double s = g.uniform(0.85, 1.15);
    const Vec3 semi{0.30 * brain_semi[0] * s, 0.32 * brain_semi[1] * s, 0.11 * brain_semi[2] * s};
    const double off_x = 0.16 * brain_semi[2] * g.uniform(0.9, 1.1), off_y = 0.08 * brain_semi[1] * g.uniform(-1.0, 1.0);
    for (int k = 0; k < 2; ++k) {
      ventricle[k].semi = semi;
      ventricle[k].centre = Vec3{head.centre[0], head.centre[1] + off_y, head.centre[2] + (k ? off_x : -off_x)};
    }
  }

  // Lesion: lobes around a centre inside the brain.
  const double r_main = g.uniform(o.lesion_radius()[0], o.lesion_radius()[1]);
  const double amp = o.lesion_deformation();
  Vec3 lesion_centre;
  {
    // Keep the main lobe's centre at a normalised brain radius where a lesion of r_main mostly fits.
    const double min_brain = std::min({brain_semi[0], brain_semi[1], brain_semi[2]});
    const double max_r = std::clamp(1.0 - r_main / min_brain, 0.0, 0.7);
    const Vec3 dir = random_direction(g);
    const double rad = max_r * std::cbrt(g.uniform());  // uniform in the ball of radius max_r
    for (int a = 0; a < 3; ++a) lesion_centre[a] = head.centre[a] + brain_semi[a] * rad * dir[a];
  }
  std::vector<Ellipsoid> lobes;
  const int n_lobes = 1 + static_cast<int>(g.integer(static_cast<std::uint64_t>(o.lesion_lobes())));
  for (int k = 0; k < n_lobes; ++k) {
    Ellipsoid e;
    e.axes = random_rotation(g);
    const double r = k == 0 ? r_main : r_main * g.uniform(0.4, 0.75);
    for (int a = 0; a < 3; ++a) e.semi[a] = r * g.uniform(0.7, 1.3);
    e.centre = lesion_centre;
    if (k > 0) {
      const Vec3 dir = random_direction(g);
      const double dist = r_main * g.uniform(0.4, 0.9);
      for (int a = 0; a < 3; ++a) e.centre[a] += dist * dir[a];
    }
    lobes.push_back(e);
  }
  // Deformation: wavelengths of about one to three lesion diameters.
  const double fmax = 1.0 / (2.0 * r_main);
  const CosineField deform = random_cosine_field(g, 5, Vec3{fmax, fmax, fmax});
  double lesion_reach = 0;  // beyond this distance from lesion_centre no voxel is lesion
  for (const auto& e : lobes) {
    double d = 0;
    for (int a = 0; a < 3; ++a) d += (e.centre[a] - lesion_centre[a]) * (e.centre[a] - lesion_centre[a]);
    lesion_reach = std::max(lesion_reach, std::sqrt(d) + e.max_semi() / (1.0 - amp));
  }

  // Enhancing vessel-like distractors: thin elongated ellipsoids inside the brain.
  std::vector<Ellipsoid> vessels;
  for (int k = 0; k < o.distractors(); ++k) {
    Ellipsoid e;
    e.axes = random_rotation(g);
    e.semi = Vec3{g.uniform(1.5, 2.5), g.uniform(1.5, 2.5), g.uniform(8.0, 16.0)};
    const Vec3 dir = random_direction(g);
    const double rad = 0.75 * std::cbrt(g.uniform());
    for (int a = 0; a < 3; ++a) e.centre[a] = head.centre[a] + brain_semi[a] * rad * dir[a];
    vessels.push_back(e);
  }

  // Smooth fields: texture (wavelengths >= ~12 mm), bias per modality (<= 1 cycle per field of view).
  const CosineField texture = random_cosine_field(g, 6, Vec3{1.0 / 12.0, 1.0 / 12.0, 1.0 / 12.0});
  const index_t M = 3;
  std::vector<CosineField> bias_fields;
  for (index_t m = 0; m < M; ++m) bias_fields.push_back(random_cosine_field(g, 4, Vec3{1.0, 1.0, 1.0}));

  Phantom p;
  p.name = "phantom_s" + std::to_string(seed);
  p.modalities = phantom_modalities(o.task());
  p.labels = phantom_labels(o.task());
  p.image = Volume(M, D, H, W, sp);
  p.bias = Volume(M, D, H, W, sp);
  p.label = LabelMap(D, H, W, sp);
  p.tissues = LabelMap(D, H, W, sp);
  const double rim_from = 1.0 - o.lesion_rim();
  for (index_t z = 0; z < D; ++z)
    for (index_t y = 0; y < H; ++y)
      for (index_t x = 0; x < W; ++x) {
        const Vec3 pos{(static_cast<double>(z) + 0.5) * sp[0] - 0.5 * fov[0], (static_cast<double>(y) + 0.5) * sp[1] - 0.5 * fov[1],
                       (static_cast<double>(x) + 0.5) * sp[2] - 0.5 * fov[2]};
        const double r = head.norm(pos);
        PhantomTissue t = PhantomTissue::air;
        if (r <= 1.0) {
          t = r > skin_in    ? PhantomTissue::skin
              : r > skull_in ? PhantomTissue::skull
              : r > brain_out ? PhantomTissue::csf
                              : PhantomTissue::brain;
          if (t == PhantomTissue::brain) {  // everything below lies inside the brain
            if (ventricle[0].norm(pos) <= 1.0 || ventricle[1].norm(pos) <= 1.0) t = PhantomTissue::csf;
            for (const auto& e : vessels)
              if (e.norm(pos) <= 1.0) t = PhantomTissue::vessel;
            double d2 = 0;
            for (int a = 0; a < 3; ++a) d2 += (pos[a] - lesion_centre[a]) * (pos[a] - lesion_centre[a]);
            if (d2 <= lesion_reach * lesion_reach) {
              double s = std::numeric_limits<double>::infinity();
              for (const auto& e : lobes) s = std::min(s, e.norm(pos));
              const Vec3 rel{pos[0] - lesion_centre[0], pos[1] - lesion_centre[1], pos[2] - lesion_centre[2]};
              s += amp * deform(rel);
              if (s <= 1.0) t = s > rim_from ? PhantomTissue::lesion_rim : PhantomTissue::lesion_core;
            }
          }
        }
        const index_t v = (z * H + y) * W + x;
        p.tissues.data[static_cast<std::size_t>(v)] = static_cast<std::uint8_t>(t);
        p.label.data[static_cast<std::size_t>(v)] =
            (t == PhantomTissue::lesion_core || t == PhantomTissue::lesion_rim) ? 1 : 0;
        const double tex = t == PhantomTissue::air ? 1.0 : 1.0 + o.texture() * texture(pos);
        const Vec3 u{pos[0] / fov[0], pos[1] / fov[1], pos[2] / fov[2]};
        for (index_t m = 0; m < M; ++m) {
          const double b = o.bias_strength() > 0 ? std::exp(o.bias_strength() * bias_fields[static_cast<std::size_t>(m)](u)) : 1.0;
          p.bias.data[static_cast<std::size_t>(m * D * H * W + v)] = static_cast<float>(b);
          p.image.data[static_cast<std::size_t>(m * D * H * W + v)] = static_cast<float>(phantom_tissue_intensity(t, m) * tex * b);
        }
      }

  // Noise last, voxel by voxel in (modality, z, y, x) order.
  add_noise(p.image, o.noise(), g, [&](index_t m) { return phantom_tissue_intensity(PhantomTissue::brain, m) / o.snr(); },
            [](index_t) { return true; });
  return p;
}

// The brats_like task (see the top of the file). Parameter draws first, then the voxel loop, then the noise.
inline Phantom make_brats_like(const PhantomOptions& o, std::uint64_t seed) {
  Generator g(seed);
  const index_t D = o.shape()[0], H = o.shape()[1], W = o.shape()[2];
  const Spacing sp = o.spacing();
  const Vec3 fov = field_of_view(o);  // mm; the origin is its centre
  const double jit = o.head_jitter();

  // Brain (the skull-stripped volume): an ellipsoid; grey matter is a cortical shell whose inner surface is
  // folded by a cosine field ("gyri"), a thin CSF layer outside it, two ventricles.
  const Ellipsoid brain = jittered_ellipsoid(g, Vec3{0.40, 0.44, 0.38}, fov, jit);
  constexpr double csf_from = 0.94, gm_from = 0.78, gm_fold = 0.07;
  const CosineField gyri = random_cosine_field(g, 8, Vec3{1.0 / 8.0, 1.0 / 8.0, 1.0 / 8.0});
  Ellipsoid ventricle[2];
  {
    const double s = g.uniform(0.85, 1.15);
    const Vec3 semi{0.30 * brain.semi[0] * s, 0.32 * brain.semi[1] * s, 0.11 * brain.semi[2] * s};
    const double off_x = 0.16 * brain.semi[2] * g.uniform(0.9, 1.1), off_y = 0.08 * brain.semi[1] * g.uniform(-1.0, 1.0);
    for (int k = 0; k < 2; ++k) {
      ventricle[k].semi = semi;
      ventricle[k].centre = Vec3{brain.centre[0], brain.centre[1] + off_y, brain.centre[2] + (k ? off_x : -off_x)};
    }
  }

  // Tumour core: lobes around a centre inside the brain, deformed as the mmfnet_like lesion; its outer shell of
  // (locally varying) thickness is the enhancing rim, the inside necrosis; the edema is the same lobes scaled by
  // edema_scale with their own deformation.
  const double r_core = g.uniform(o.lesion_radius()[0], o.lesion_radius()[1]);
  const double amp = o.lesion_deformation(), amp_e = 0.5 * o.lesion_deformation();
  const double scale_e = g.uniform(o.edema_scale()[0], o.edema_scale()[1]);
  Vec3 centre;
  {
    const double min_brain = std::min({brain.semi[0], brain.semi[1], brain.semi[2]});
    const double max_r = std::clamp(1.0 - 1.2 * r_core / min_brain, 0.0, 0.6);
    const Vec3 dir = random_direction(g);
    const double rad = max_r * std::cbrt(g.uniform());
    for (int a = 0; a < 3; ++a) centre[a] = brain.centre[a] + brain.semi[a] * rad * dir[a];
  }
  std::vector<Ellipsoid> lobes;
  const int n_lobes = 1 + static_cast<int>(g.integer(static_cast<std::uint64_t>(o.lesion_lobes())));
  for (int k = 0; k < n_lobes; ++k) {
    Ellipsoid e;
    e.axes = random_rotation(g);
    const double r = k == 0 ? r_core : r_core * g.uniform(0.4, 0.75);
    for (int a = 0; a < 3; ++a) e.semi[a] = r * g.uniform(0.7, 1.3);
    e.centre = centre;
    if (k > 0) {
      const Vec3 dir = random_direction(g);
      const double dist = r_core * g.uniform(0.4, 0.9);
      for (int a = 0; a < 3; ++a) e.centre[a] += dist * dir[a];
    }
    lobes.push_back(e);
  }
  const double fmax = 1.0 / (2.0 * r_core);
  const CosineField deform = random_cosine_field(g, 5, Vec3{fmax, fmax, fmax});
  const CosineField deform_e = random_cosine_field(g, 5, Vec3{fmax / scale_e, fmax / scale_e, fmax / scale_e});
  const CosineField rim_field = random_cosine_field(g, 4, Vec3{fmax, fmax, fmax});
  double reach = 0;  // beyond this distance from `centre` no voxel is tumour or edema
  for (const auto& e : lobes) {
    double d = 0;
    for (int a = 0; a < 3; ++a) d += (e.centre[a] - centre[a]) * (e.centre[a] - centre[a]);
    reach = std::max(reach, std::sqrt(d) + e.max_semi() * std::max(1.0 + amp, scale_e * (1.0 + amp_e)));
  }

  // Enhancing vessel-like distractors (bright in T1ce only).
  std::vector<Ellipsoid> vessels;
  for (int k = 0; k < o.distractors(); ++k) {
    Ellipsoid e;
    e.axes = random_rotation(g);
    e.semi = Vec3{g.uniform(0.8, 1.4), g.uniform(0.8, 1.4), g.uniform(5.0, 10.0)};
    const Vec3 dir = random_direction(g);
    const double rad = 0.75 * std::cbrt(g.uniform());
    for (int a = 0; a < 3; ++a) e.centre[a] = brain.centre[a] + brain.semi[a] * rad * dir[a];
    vessels.push_back(e);
  }

  const CosineField texture = random_cosine_field(g, 6, Vec3{1.0 / 12.0, 1.0 / 12.0, 1.0 / 12.0});
  const index_t M = 4;
  std::vector<CosineField> bias_fields;
  for (index_t m = 0; m < M; ++m) bias_fields.push_back(random_cosine_field(g, 4, Vec3{1.0, 1.0, 1.0}));

  Phantom p;
  p.name = "phantom_s" + std::to_string(seed);
  p.modalities = phantom_modalities(o.task());
  p.labels = phantom_labels(o.task());
  p.image = Volume(M, D, H, W, sp);
  p.bias = Volume(M, D, H, W, sp);
  p.label = LabelMap(D, H, W, sp);
  p.tissues = LabelMap(D, H, W, sp);
  const index_t n = D * H * W;
  for (index_t z = 0; z < D; ++z)
    for (index_t y = 0; y < H; ++y)
      for (index_t x = 0; x < W; ++x) {
        const Vec3 pos{(static_cast<double>(z) + 0.5) * sp[0] - 0.5 * fov[0], (static_cast<double>(y) + 0.5) * sp[1] - 0.5 * fov[1],
                       (static_cast<double>(x) + 0.5) * sp[2] - 0.5 * fov[2]};
        const double r = brain.norm(pos);
        PhantomTissue t = PhantomTissue::air;
        std::uint8_t label = 0;
        if (r <= 1.0) {
          t = r > csf_from ? PhantomTissue::csf
              : r > gm_from + gm_fold * gyri(pos) ? PhantomTissue::grey_matter
                                                  : PhantomTissue::white_matter;
          if (ventricle[0].norm(pos) <= 1.0 || ventricle[1].norm(pos) <= 1.0) t = PhantomTissue::csf;
          for (const auto& e : vessels)
            if (t != PhantomTissue::csf && e.norm(pos) <= 1.0) t = PhantomTissue::vessel;
          double d2 = 0;
          for (int a = 0; a < 3; ++a) d2 += (pos[a] - centre[a]) * (pos[a] - centre[a]);
          if (d2 <= reach * reach) {
            double s = std::numeric_limits<double>::infinity();
            for (const auto& e : lobes) s = std::min(s, e.norm(pos));
            const Vec3 rel{pos[0] - centre[0], pos[1] - centre[1], pos[2] - centre[2]};
            const double s_core = s + amp * deform(rel);
            const double rim = std::clamp(o.lesion_rim() * (1.0 + 0.5 * rim_field(rel)), 0.0, 1.0);
            if (s_core <= 1.0) {
              t = s_core > 1.0 - rim ? PhantomTissue::enhancing : PhantomTissue::necrosis;
              label = t == PhantomTissue::enhancing ? 3 : 2;
            } else if (t != PhantomTissue::csf && s / scale_e + amp_e * deform_e(rel) <= 1.0) {
              t = PhantomTissue::edema;  // edema spreads through the parenchyma, not into CSF
              label = 1;
            }
          }
        }
        const index_t v = (z * H + y) * W + x;
        p.tissues.data[static_cast<std::size_t>(v)] = static_cast<std::uint8_t>(t);
        p.label.data[static_cast<std::size_t>(v)] = label;
        const double tex = t == PhantomTissue::air ? 1.0 : 1.0 + o.texture() * texture(pos);
        const Vec3 u{pos[0] / fov[0], pos[1] / fov[1], pos[2] / fov[2]};
        for (index_t m = 0; m < M; ++m) {
          const double b = o.bias_strength() > 0 ? std::exp(o.bias_strength() * bias_fields[static_cast<std::size_t>(m)](u)) : 1.0;
          p.bias.data[static_cast<std::size_t>(m * n + v)] = static_cast<float>(b);
          p.image.data[static_cast<std::size_t>(m * n + v)] = static_cast<float>(brats_tissue_intensity(t, m) * tex * b);
        }
      }

  // Noise last, voxel by voxel in (modality, z, y, x) order, inside the brain only: outside stays exactly 0
  // (skull-stripped, as BraTS), so the non-zero mask is the brain.
  add_noise(p.image, o.noise(), g, [&](index_t m) { return brats_tissue_intensity(PhantomTissue::white_matter, m) / o.snr(); },
            [&](index_t i) { return p.tissues.data[static_cast<std::size_t>(i)] != static_cast<std::uint8_t>(PhantomTissue::air); });
  return p;
}

// The npc_like task (see the top of the file). Parameter draws first, then the voxel loop, then the noise.
// Axes: +z superior, +y anterior, x left-right; positions in mm from the field of view's centre.
inline Phantom make_npc_like(const PhantomOptions& o, std::uint64_t seed) {
  Generator g(seed);
  const index_t D = o.shape()[0], H = o.shape()[1], W = o.shape()[2];
  const Spacing sp = o.spacing();
  const Vec3 fov = field_of_view(o);  // mm; the origin is its centre
  const double jit = o.head_jitter();

  // Head and neck: muscle inside a bright subcutaneous-fat shell.
  const Ellipsoid head = jittered_ellipsoid(g, Vec3{0.46, 0.44, 0.42}, fov, jit);
  constexpr double fat_in = 0.88;

  // Nasopharynx: the airway lumen (elongated along z) slightly anterior and superior of the head centre, a 2 mm
  // mucosa around it, the adenoid on its posterior-superior wall, parapharyngeal fat pads lateral to it, the
  // clivus posterior-superior and a vertebral body posterior-inferior of it. Sizes in mm (anatomy, not the grid).
  Vec3 naso;
  naso[0] = head.centre[0] + head.semi[0] * g.uniform(0.0, 0.15);
  naso[1] = head.centre[1] + head.semi[1] * g.uniform(0.15, 0.3);
  naso[2] = head.centre[2] + head.semi[2] * g.uniform(-0.04, 0.04);
  Ellipsoid airway, mucosa, adenoid, fat_pad[2], clivus, vertebra;
  airway.centre = naso;
  airway.semi = Vec3{0.6 * head.semi[0] * g.uniform(0.85, 1.15), g.uniform(3.5, 5.0), g.uniform(6.0, 8.0)};
  mucosa.centre = naso;
  mucosa.semi = Vec3{airway.semi[0] + 2.0, airway.semi[1] + 2.0, airway.semi[2] + 2.0};
  adenoid.semi = Vec3{8.0 * g.uniform(0.8, 1.2), 3.0 * g.uniform(0.8, 1.2), 7.0 * g.uniform(0.8, 1.2)};
  adenoid.centre = Vec3{naso[0] + 0.4 * airway.semi[0], naso[1] - (airway.semi[1] + 2.5), naso[2]};
  for (int k = 0; k < 2; ++k) {
    fat_pad[k].semi = Vec3{12.0 * g.uniform(0.8, 1.2), 5.0 * g.uniform(0.8, 1.2), 3.0 * g.uniform(0.8, 1.2)};
    const double off = airway.semi[2] + 7.0 * g.uniform(0.9, 1.1);
    fat_pad[k].centre = Vec3{naso[0], naso[1] - 1.0, naso[2] + (k ? off : -off)};
  }
  clivus.semi = Vec3{8.0 * g.uniform(0.9, 1.1), 5.0 * g.uniform(0.9, 1.1), 8.0 * g.uniform(0.9, 1.1)};
  clivus.centre = Vec3{naso[0] + 0.7 * airway.semi[0], naso[1] - (airway.semi[1] + 10.0), naso[2]};
  vertebra.semi = Vec3{12.0 * g.uniform(0.9, 1.1), 7.0 * g.uniform(0.9, 1.1), 8.0 * g.uniform(0.9, 1.1)};
  vertebra.centre = Vec3{naso[0] - 0.5 * airway.semi[0], naso[1] - (airway.semi[1] + 14.0), naso[2]};

  // Tumour: lobes around a centre on the posterior or lateral airway wall (angle phi from posterior towards
  // either side, up to 108 degrees), deformed as the mmfnet_like lesion.
  const double r_main = g.uniform(o.lesion_radius()[0], o.lesion_radius()[1]);
  const double amp = o.lesion_deformation();
  Vec3 centre;
  {
    const double phi = g.uniform(-0.6, 0.6) * 3.141592653589793;
    const double dy = -std::cos(phi), dx = std::sin(phi);
    const double wall = 1.0 / std::sqrt(dy * dy / (airway.semi[1] * airway.semi[1]) + dx * dx / (airway.semi[2] * airway.semi[2]));
    const double dist = wall + 0.4 * r_main;
    centre = Vec3{naso[0] + airway.semi[0] * g.uniform(-0.3, 0.4), naso[1] + dist * dy, naso[2] + dist * dx};
  }
  std::vector<Ellipsoid> lobes;
  const int n_lobes = 1 + static_cast<int>(g.integer(static_cast<std::uint64_t>(o.lesion_lobes())));
  for (int k = 0; k < n_lobes; ++k) {
    Ellipsoid e;
    e.axes = random_rotation(g);
    const double r = k == 0 ? r_main : r_main * g.uniform(0.4, 0.75);
    for (int a = 0; a < 3; ++a) e.semi[a] = r * g.uniform(0.7, 1.3);
    e.centre = centre;
    if (k > 0) {
      const Vec3 dir = random_direction(g);
      const double dist = r_main * g.uniform(0.4, 0.9);
      for (int a = 0; a < 3; ++a) e.centre[a] += dist * dir[a];
    }
    lobes.push_back(e);
  }
  const double fmax = 1.0 / (2.0 * r_main);
  const CosineField deform = random_cosine_field(g, 5, Vec3{fmax, fmax, fmax});
  const CosineField hetero = random_cosine_field(g, 4, Vec3{1.0 / 6.0, 1.0 / 6.0, 1.0 / 6.0});  // +-8% inside
  double reach = 0;  // beyond this distance from `centre` no voxel is tumour
  for (const auto& e : lobes) {
    double d = 0;
    for (int a = 0; a < 3; ++a) d += (e.centre[a] - centre[a]) * (e.centre[a] - centre[a]);
    reach = std::max(reach, std::sqrt(d) + e.max_semi() / (1.0 - amp));
  }

  // Retropharyngeal lymph nodes: tumour-like distractors posterior-lateral of the airway.
  std::vector<Ellipsoid> nodes;
  for (int k = 0; k < o.distractors(); ++k) {
    Ellipsoid e;
    e.axes = random_rotation(g);
    e.semi = Vec3{g.uniform(2.5, 4.0), g.uniform(2.5, 4.0), g.uniform(2.5, 4.0)};
    const double side = (k % 2) ? 1.0 : -1.0;
    e.centre = Vec3{naso[0] + airway.semi[0] * g.uniform(-0.5, 0.5), naso[1] - (airway.semi[1] + g.uniform(5.0, 9.0)),
                    naso[2] + side * g.uniform(6.0, 12.0)};
    nodes.push_back(e);
  }

  const CosineField texture = random_cosine_field(g, 6, Vec3{1.0 / 12.0, 1.0 / 12.0, 1.0 / 12.0});
  const CosineField bias_field = random_cosine_field(g, 4, Vec3{1.0, 1.0, 1.0});

  Phantom p;
  p.name = "phantom_s" + std::to_string(seed);
  p.modalities = phantom_modalities(o.task());
  p.labels = phantom_labels(o.task());
  p.image = Volume(1, D, H, W, sp);
  p.bias = Volume(1, D, H, W, sp);
  p.label = LabelMap(D, H, W, sp);
  p.tissues = LabelMap(D, H, W, sp);
  using PT = PhantomTissue;
  for (index_t z = 0; z < D; ++z)
    for (index_t y = 0; y < H; ++y)
      for (index_t x = 0; x < W; ++x) {
        const Vec3 pos{(static_cast<double>(z) + 0.5) * sp[0] - 0.5 * fov[0], (static_cast<double>(y) + 0.5) * sp[1] - 0.5 * fov[1],
                       (static_cast<double>(x) + 0.5) * sp[2] - 0.5 * fov[2]};
        const double r = head.norm(pos);
        PT t = PT::air;
        double het = 1.0;
        if (r <= 1.0) {
          t = r > fat_in ? PT::fat : PT::muscle;
          if (t == PT::muscle) {  // everything below lies inside the fat shell
            if (vertebra.norm(pos) <= 1.0) t = PT::vertebra;
            if (clivus.norm(pos) <= 1.0) t = PT::bone;
            if (fat_pad[0].norm(pos) <= 1.0 || fat_pad[1].norm(pos) <= 1.0) t = PT::fat;
            for (const auto& e : nodes)
              if (e.norm(pos) <= 1.0) t = PT::lymph_node;
            if (mucosa.norm(pos) <= 1.0) t = PT::mucosa;
            if (adenoid.norm(pos) <= 1.0) t = PT::lymphoid;
            if (airway.norm(pos) <= 1.0) t = PT::airway;
            double d2 = 0;
            for (int a = 0; a < 3; ++a) d2 += (pos[a] - centre[a]) * (pos[a] - centre[a]);
            if (t != PT::bone && t != PT::vertebra && d2 <= reach * reach) {
              double s = std::numeric_limits<double>::infinity();
              for (const auto& e : lobes) s = std::min(s, e.norm(pos));
              const Vec3 rel{pos[0] - centre[0], pos[1] - centre[1], pos[2] - centre[2]};
              if (s + amp * deform(rel) <= 1.0) {
                t = PT::tumour;
                het = 1.0 + 0.08 * hetero(rel);
              }
            }
          }
        }
        const index_t v = (z * H + y) * W + x;
        p.tissues.data[static_cast<std::size_t>(v)] = static_cast<std::uint8_t>(t);
        p.label.data[static_cast<std::size_t>(v)] = t == PT::tumour ? 1 : 0;
        const double tex = t == PT::air ? 1.0 : 1.0 + o.texture() * texture(pos);
        const Vec3 u{pos[0] / fov[0], pos[1] / fov[1], pos[2] / fov[2]};
        const double b = o.bias_strength() > 0 ? std::exp(o.bias_strength() * bias_field(u)) : 1.0;
        p.bias.data[static_cast<std::size_t>(v)] = static_cast<float>(b);
        p.image.data[static_cast<std::size_t>(v)] = static_cast<float>(npc_tissue_intensity(t) * tex * het * b);
      }

  // Noise last, voxel by voxel in (z, y, x) order, everywhere (MR magnitude: the air is Rayleigh-distributed).
  add_noise(p.image, o.noise(), g, [&](index_t) { return npc_tissue_intensity(PT::muscle) / o.snr(); },
            [](index_t) { return true; });
  return p;
}

// The barriers task (see the top of the file). Parameter draws first, then the voxel loop, then the noise.
inline Phantom make_barriers(const PhantomOptions& o, std::uint64_t seed) {
  Generator g(seed);
  const index_t D = o.shape()[0], H = o.shape()[1], W = o.shape()[2];
  const Spacing sp = o.spacing();
  const Vec3 fov = field_of_view(o);  // mm; the origin is its centre
  const double jit = o.head_jitter();
  using PT = PhantomTissue;

  const Ellipsoid head = jittered_ellipsoid(g, Vec3{0.44, 0.45, 0.42}, fov, jit);
  constexpr double skin_from = 0.93, skull_from = 0.85, brain_to = 0.80;
  const Vec3 bsemi{brain_to * head.semi[0], brain_to * head.semi[1], brain_to * head.semi[2]};
  // Structure parameters (normalised brain coordinates u).
  const double t0 = -0.45 + g.uniform(-0.05, 0.05);            // tentorium attachment height = transverse sinuses
  const double midline = head.centre[2] + g.uniform(-0.6, 0.6);  // falx plane (mm)
  const Vec3 cb_semi{0.24 * g.uniform(0.9, 1.1), 0.36 * g.uniform(0.9, 1.1), 0.55 * g.uniform(0.9, 1.1)};
  const Vec3 vent_semi{0.18 * g.uniform(0.85, 1.15), 0.38 * g.uniform(0.85, 1.15), 0.10 * g.uniform(0.85, 1.15)};
  const double vent_z = 0.08 + g.uniform(-0.04, 0.04), vent_x = 0.2 + g.uniform(-0.02, 0.03);
  const CosineField texture = random_cosine_field(g, 6, Vec3{1.0 / 12.0, 1.0 / 12.0, 1.0 / 12.0});
  const index_t M = 3;
  std::vector<CosineField> bias_fields;
  for (index_t m = 1; m < M; ++m) bias_fields.push_back(random_cosine_field(g, 4, Vec3{1.0, 1.0, 1.0}));

  // The voxel index whose cell [i sp, (i+1) sp) - fov / 2 holds a coordinate: one-voxel-thick sheets.
  auto cell = [](double pos_mm, double spacing, double fov_mm) {
    return static_cast<index_t>(std::floor((pos_mm + 0.5 * fov_mm) / spacing));
  };
  const index_t x_mid = cell(midline, sp[2], fov[2]);
  auto tent = [&](double uy, double ux) { return t0 + 0.45 * (1.0 + uy) * (1.0 - 0.5 * std::abs(ux)); };

  Phantom p;
  p.name = "phantom_s" + std::to_string(seed);
  p.modalities = phantom_modalities(o.task());
  p.labels = phantom_labels(o.task());
  p.image = Volume(M, D, H, W, sp);
  p.bias = Volume(M, D, H, W, sp);
  p.label = LabelMap(D, H, W, sp);
  p.tissues = LabelMap(D, H, W, sp);
  const index_t n = D * H * W;
  for (index_t z = 0; z < D; ++z)
    for (index_t y = 0; y < H; ++y)
      for (index_t x = 0; x < W; ++x) {
        const Vec3 pos{(static_cast<double>(z) + 0.5) * sp[0] - 0.5 * fov[0], (static_cast<double>(y) + 0.5) * sp[1] - 0.5 * fov[1],
                       (static_cast<double>(x) + 0.5) * sp[2] - 0.5 * fov[2]};
        const double r = head.norm(pos);
        PT t = PT::air;
        std::uint8_t label = 0;
        if (r <= 1.0) {
          t = r > skin_from ? PT::skin : r > skull_from ? PT::skull : r > brain_to ? PT::csf : PT::brain;
          const Vec3 u{(pos[0] - head.centre[0]) / bsemi[0], (pos[1] - head.centre[1]) / bsemi[1],
                       (pos[2] - head.centre[2]) / bsemi[2]};
          const double rb = r / brain_to;
          const double h = tent(u[1], u[2]);
          if (rb <= 1.0) {
            // cerebellum below the tentorium
            const double cz = (u[0] + 0.72) / cb_semi[0], cy = (u[1] + 0.55) / cb_semi[1], cx = u[2] / cb_semi[2];
            if (cz * cz + cy * cy + cx * cx <= 1.0 && rb <= 0.97 && u[0] < h - 0.06) { t = PT::cerebellum; label = 1; }
            // falx with the fissure's CSF either side
            const bool above = u[1] > -0.2 ? u[0] > 0.15 + 0.2 * u[1] * u[1] : u[0] > tent(u[1], 0.0);
            if (above && std::abs(x - x_mid) <= 1) {
              if (x == x_mid) { t = PT::dura; label = 2; } else { t = PT::csf; label = 0; }
            }
            // ventricles
            for (int side = -1; side <= 1; side += 2) {
              const double vz = (u[0] - vent_z) / vent_semi[0], vy = u[1] / vent_semi[1], vx = (u[2] - side * vent_x) / vent_semi[2];
              if (vz * vz + vy * vy + vx * vx <= 1.0) { t = PT::csf; label = 5; }
            }
            // tentorium: one voxel along z
            if (u[1] <= -0.1 && z == cell(head.centre[0] + h * bsemi[0], sp[0], fov[0])) { t = PT::dura; label = 4; }
          }
          // sinuses in the dura shell just outside the brain
          if (rb > 1.0 && rb <= 1.06) {
            const bool sagittal = std::abs(x - x_mid) <= 1 && u[0] > t0 + 0.6 * std::max(u[1], 0.0);
            const bool transverse = u[1] < 0.1 && std::abs(pos[0] - (head.centre[0] + t0 * bsemi[0])) < sp[0];
            if (sagittal || transverse) { t = PT::sinus_blood; label = 3; }
          }
        }
        const index_t v = (z * H + y) * W + x;
        p.tissues.data[static_cast<std::size_t>(v)] = static_cast<std::uint8_t>(t);
        p.label.data[static_cast<std::size_t>(v)] = label;
        const double tex = t == PT::air ? 1.0 : 1.0 + o.texture() * texture(pos);
        const Vec3 uf{pos[0] / fov[0], pos[1] / fov[1], pos[2] / fov[2]};
        for (index_t m = 0; m < M; ++m) {
          const double b = m > 0 && o.bias_strength() > 0
                               ? std::exp(o.bias_strength() * bias_fields[static_cast<std::size_t>(m - 1)](uf)) : 1.0;
          p.bias.data[static_cast<std::size_t>(m * n + v)] = static_cast<float>(b);
          p.image.data[static_cast<std::size_t>(m * n + v)] = static_cast<float>(barriers_tissue_intensity(t, m) * tex * b);
        }
      }

  // Noise last, voxel by voxel in (modality, z, y, x) order, everywhere.
  add_noise(p.image, o.noise(), g, [&](index_t m) { return barriers_tissue_intensity(PT::brain, m) / o.snr(); },
            [](index_t) { return true; });
  return p;
}

}  // namespace detail

// A phantom drawn from `seed` (see the top of this file). Invalid options raise value_error naming the option.
inline Phantom make_phantom(const PhantomOptions& options, std::uint64_t seed) {
  detail::check_phantom_options(options);
  switch (options.task()) {
    case PhantomTask::mmfnet_like: return detail::make_mmfnet_like(options, seed);
    case PhantomTask::brats_like: return detail::make_brats_like(options, seed);
    case PhantomTask::npc_like: return detail::make_npc_like(options, seed);
    case PhantomTask::barriers: return detail::make_barriers(options, seed);
  }
  fail<value_error>("mmnet::data::make_phantom", "task", "a PhantomTask", static_cast<int>(options.task()));
}

}  // namespace mmnet::data
